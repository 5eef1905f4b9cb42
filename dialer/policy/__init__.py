"""Rules and pace: what may be called, when, from which number, and how fast.

Pure decisions and the fleet-wide budgets; what they decide is written by
``dialer.state``.

- ``rules``: what an outcome means, when a contact is dialed again, calling hours in
  the number's time zones, recurring schedules.
- ``pacing``: calls per second across every worker (account, number, campaign), in
  Redis.
- ``requests``: the account's budget for the requests that are not creates.
- ``callerids``: which pool number a call goes out from.
"""
