"""A plain Celery dialer: the yardstick ``benchmarks/cost_per_call.py`` measures beside
the dialer in the same run (issue 13, target 3: "whole-machine cost per call").

What a competent engineer writes for "dial a list through Catapult and record how each
call went" when nothing forces them to think about the cost per call:

- ``app.py``: one Celery app on Redis (late acks, results ignored), one table of
  contacts (SQLAlchemy ORM, ``metadata.create_all``), and two tasks. ``dial_contact``
  loads its contact in one ORM session, POSTs create-call to the carrier with Basic
  auth, keeps the call id from the ``Location`` header and commits. ``apply_event``
  applies one callback: in one ORM transaction it finds the contact by call id, locked
  (``FOR UPDATE``: a call's answer and hangup may be applied at once), and updates it
  (retried shortly if the event beat the dial's commit). Both retry a database that
  refuses a connection.
- ``receiver.py``: a WSGI app (served by ``uvicorn --interface wsgi``) that checks the
  callback secret the carrier sends as Basic credentials (the dialer's receiver checks
  the same way), and enqueues one ``apply_event`` per event.
- ``__main__.py``: ``load`` creates the table and inserts the contacts (set-up, not
  measured); ``launch`` enqueues one ``dial_contact`` per contact, at ``--cps`` a second
  if given: one producer for the fleet, so its pace is the fleet's.

Why the launcher paces and not Celery's ``rate_limit``: the limit is per worker, so it
needs a single dialing worker, and on this project's Celery (5.6.3, kombu 5.7) a
rate-limited task on the thread pool ran at one a second once the first few had gone.

No batching anywhere, on purpose: one task per contact and per event, one ORM
transaction per row. That is the design the dialer's batching is measured against. It
is not made slow either: the thread pool (the work is I/O), a pooled engine holding a
connection per thread and a shared ``requests`` session per process, an index on the call id, Celery's per-task log lines
off (``--loglevel=WARNING``, as the dialer silences its own). It does not retry busy or
unanswered contacts, reconcile lost creates, or pause; a dial it cannot place is marked
failed.
"""
