"""What an answered call hears: the campaign's call script, and what the person answered.

docs/interface.md, "What an answered call hears"; how and why it is driven with BXML is in
docs/design.md, "Call scripts".

- ``template``: ``{column}`` substitution from the contact's own row, and nothing more.
- ``spec``: the script a campaign carries (``Script``): checked at create and update, and
  the per-row check the import runs (a message too long for the carrier).
- ``bxml``: the documents the receiver answers the carrier's ``answer`` and ``gather``
  callbacks with.
- ``source``: what the receiver reads to answer them: the campaign's script (cached for a
  moment) and, when the message names columns, the contact's row.
"""
