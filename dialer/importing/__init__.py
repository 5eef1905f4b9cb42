"""CSV → contacts: normalization, dedupe, do-not-call suppression, in bulk.

- ``numbers``: what a typed phone number or SIP URI is as an address (E.164), or why not.
- ``files``: checking and opening a CSV file, its header and phone column.
- ``contacts``: a contacts file into a campaign's contacts (``import_contacts``).
- ``dnc``: do-not-call lists, numbers put on and taken off (``add_suppressions``,
  ``remove_suppressions``).

Nothing here commits: the caller owns the transaction.
"""
