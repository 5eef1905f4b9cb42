"""Receive: the carrier's callbacks, from the internet to the event stream.

The receiver (``dialer receiver``) authenticates each request, bounds it, validates the
event and hands it to a Redis stream; it never touches the database. The workers apply
what it handed over (``dialer.worker.applier``, ``dialer.state.events``).

- ``receiver``: the ASGI and WSGI adapters that do the I/O.
- ``gate``: the rules whatever serves them: path, method, credentials, body, answer.
- ``jsonbody``, ``httplimits``: bounds on the body's JSON and the request's head.
- ``eventstream``, ``asyncstream``: the stream, written (``XADD``) and read.
"""
