"""Development only: what stands in for production here. Nothing on the production path
imports it; the CLI's ``demo`` and ``simulator`` commands do, when they run.

- ``simulator``: the carrier (``dialer simulator``).
- ``demo``: ``dialer demo``, a whole campaign on SQLite.
- ``fleet``: simulator, receiver, workers and beat as real processes (tests, benchmarks).
- ``databases``: a private PostgreSQL and a PgBouncer as real processes (tests that
  stop a database).
- ``cutoff``: a TCP relay that cuts a service off.
- ``plans``: every statement a piece of the flow runs, with its plan.
"""
