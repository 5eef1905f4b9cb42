"""The state machine: the only code that writes a campaign, contact or attempt status.

Nothing else writes a status column.

    contact   pending -> dialing -> answered | unanswered | failed | cancelled
                  ^          |
                  +----------+   (a retry: pending again, due after --retry-delay)

    attempt   queued -> sending -> created -> answered -> ended
                 |         |  \\                  (created/answered) -> ended
                 |         |   -> unknown -> created | withdrawn     (reconciled)
                 |         -> failed | queued (nothing created: try again later)
                 -> withdrawn (paused or cancelled before it was sent)

Every transition is a conditional write on the row's current status (or made under a
row lock), so two workers, a repeated task or a repeated callback can never move a row
twice. Callbacks only move an attempt forward; their facts (answered, timed out, hung
up with a cause) accumulate, and the outcome is a function of the facts, so events in
any order end in the same rows (``rules.outcome``).

Functions take the caller's session and never commit: the caller owns the transaction.
The exception is ``starting``, which runs without SQLAlchemy on a DB-API connection and
makes its one transaction itself (a savepoint, inside one the caller has open).

One module per family of transitions; the callers import the one that owns the function
(``from dialer.state import release`` then ``release.release_due(...)``):

    tags         the tag a call carries (build_tag)
    release      due pending contacts -> queued attempts; running campaigns, backlogs
    send         claim queued attempts; record created / not sent / refused / ambiguous / stop
    withdraw     queued attempts withdrawn before sending (pause, cancel, a rule that forbids)
    suppression  the do-not-call lists (is_listed, suppress_listed)
    reconcile    expired claims, overdue calls, ambiguous sends resolved
    events       callback events applied (apply_events), orphans, settle
    starting     start and resume (run 1 begins), with the database driver alone
    runs         recurring runs, archiving and finishing a run
    windows      calling windows: due contacts wait for their opening
    controls     update the rules, pause, cancel, complete
    common       what they share: locks (contact first, then attempt), counters, adopting a call

Statements that differ between PostgreSQL and SQLite are asked of
``dialer.store.dialects``: no module here tests which database it is on.
"""
