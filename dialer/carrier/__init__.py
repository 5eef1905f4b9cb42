"""Dial: the Catapult v1 Voice API, the only code that speaks the carrier's HTTP.

- ``client``: create, read, control and hang up calls (one ``requests`` session per
  process, shared by its threads).
- ``request``: one create-call request and the create-call page's rules for its fields.
- ``options``: a campaign's create-call options (recording, SIP headers, timeouts).
- ``errors``: what a failed request means (an ``Action``: retry, back off, give up on
  the number, stop the campaign, or find out whether the call exists) and messages that
  never carry a secret.
- ``events``: callback bodies validated into the dialer's ``CallEvent``.

The facts these rely on, with their sources, are in docs/carrier.md.
"""
