"""The Celery worker: thin tasks over ``dialer.state``, and the threads beside them.

- ``app``: the Celery app and its settings (``celery -A dialer worker|beat``).
- ``tasks``: the tasks; each takes ids and is safe to run twice or never.
- ``scheduling``: the tick: releasing due contacts at each campaign's share of the pace.
- ``dialing``: a dial batch: claim, send each in its slot, record what was created.
- ``applier``: the consumer threads that apply the callback stream in batches.
- ``sweep``: re-finding what a crash, a lost message or a lost callback left behind.
- ``hangups``: ending calls past their maximum duration.
- ``clients``: the process's carrier client and pacer, and dial-message publishing.
- ``nudge``: one task message written without Celery, for the CLI's fast start.
"""
