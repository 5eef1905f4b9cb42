"""A local stand-in for the parts of the Catapult v1 Voice API the dialer uses.

It serves ``/v1/users/{userId}/calls`` (create, read, list, events, hang up, transfer),
REST call control (``/audio``, ``/gather``) and BXML calls, with the validation, errors
and callbacks that ``docs/carrier.md`` describes; it plays the people who answer, and it
injects the carrier's failures on demand, so the dialer can be tried and tested without
the carrier.

Modules: ``config`` (SimConfig), ``protocol`` (wire format, request checks), ``calls``
(a call, the scheduler), ``base`` (shared state, events), ``core`` (Simulator, the calls
API), ``delivery`` (callbacks out, BXML replies in), ``bxml`` (reading BXML), ``script``
(running scripts and gathers), ``people`` (what people do), ``control`` (REST call
control, the request limit), ``server`` (HTTP), ``cli`` (``dialer simulator``).

What it does that the real platform may do differently, on purpose:

- Destinations starting with ``+1555000`` are refused with 403
  ``forbidden``/``invalid-call-to-number`` (a destination that cannot be called), so tests
  can exercise a permanent per-contact failure without configuration.
- Outcome ``silent`` models lost callbacks: the call is created and never sends a callback,
  not even when it is hung up through the API (its state stays ``started`` until then).
- A ``null`` in a request body is a validation error: the docs say to send only the fields
  that are set, and a dialer that sends nulls should find out here, not in production.
  So is a field the docs do not list.
- Fields with no value (``activeTime`` before an answer, ``tag`` when none was given, ...)
  are left out of ``GET …/calls/{id}`` rather than sent as ``null``.
- Every event that happens is listed by ``GET …/calls/{id}/events`` whether or not its
  callback was delivered; the admin record's ``events`` lists only the callbacks (and
  requestUrl fetches) a receiver accepted (2xx), in the order they were accepted,
  duplicates included.
- Callbacks to one call are delivered one at a time, in order (unless reordering is
  configured), while different calls are delivered in parallel. A callback that fails goes
  to the ``fallbackUrl``; if that fails too it is retried after 0.5 s, 1 s, 2 s, ... up to
  ``callback_retries`` times, holding back the call's later events meanwhile.

An answered call hears something:

- A call created with ``callbackHttpMethod`` ``GET`` is a BXML call: each of its events
  is a GET to its callbackUrl with the event's fields as query parameters, and the 2xx
  reply to the ``answer`` GET (a ``<Response>`` of at most 16 KB, any content type) is
  its script. Verbs run in order: SpeakSentence and PlayAudio (each ``speech_seconds``),
  Pause (``length`` or ``duration`` x ``time_scale``), Gather, Hangup, Transfer,
  Redirect; any other verb is recorded in ``skipped_verbs`` and skipped. A Gather's
  result is a GET to its requestUrl only (``eventType=gather``, ``state``, ``digits``,
  ``reason``, ``gatherId``, the Gather's ``tag``, ...), and the reply runs next (an
  empty reply lets the rest of the document go on); a Redirect GETs its requestUrl and
  runs the reply instead of the rest.
- Only the first delivery attempt of the answer (callbackUrl, then fallbackUrl) can give
  the script: a duplicated or retried answer never runs one twice. A non-2xx reply, a
  reply that is empty, too big, not XML, has a DTD or a bad attribute gives no script
  and sets ``bxml_error``; the person then acts as on a silent call.
- A REST call (POST) hears what the dialer sends through ``/audio`` and ``/gather``
  (control.py), with ``speak``/``playback`` and ``gather`` events to its callbackUrl.
- People (people.py), drawn per call by ``people`` and seeded: ``press`` (a key from
  ``keys`` after ``press_delay``, cutting the prompt short), ``wait`` (no key),
  ``hangup`` (hangs up mid-prompt: a ``gather`` hung-up, then the ``hangup``) and
  ``stay`` (waits gathers out, never hangs up). Whenever the call goes quiet (answered
  with nothing playing, the script over, a transfer made) everyone but ``stay`` hangs up
  ``talk_time`` later; a stay person stays until the dialer hangs up or
  ``stay_seconds`` pass. A Transfer (or a REST transfer) bridges the call for
  ``talk_time``, then the person hangs up.
- A call created with ``recordingEnabled`` that was answered gets a ``recording`` event
  ``recording_delay`` after its hangup and, with ``transcriptionEnabled``, a
  ``transcription`` event ``transcription_delay`` after that. ``refused_numbers``
  (``--refuse-from``) are ``from`` numbers refused with 403 ``number-access-denied``.
- ``request_rate`` limits every request but create-call, per account, over 1 s: past it,
  429 ``rate-limit-reached`` with ``X-RateLimit-Reset`` in epoch milliseconds.

Admin endpoints for tests, without auth: ``GET /_sim/calls``, ``GET /_sim/stats``,
``POST /_sim/config`` (a JSON object of SimConfig fields), ``POST /_sim/reset``.

A call's admin record: ``id, from, to, tag, outcome, created_at, state, callback_url,
method`` (GET or POST), ``events`` (accepted deliveries by name), ``undelivered``,
``refused`` (4xx replies), ``ambiguous``, ``person``, ``audio`` (what the person heard:
``{verb, text | url, at`` seconds after the answer, ``voice/gender/locale`` when given,
``prompt: true`` for a gather's prompt``}``), ``gathers`` (``{gatherId, digits, reason,
tag}``), ``pressed`` (the keys the person pressed last, or null), ``transferred_to``,
``whisper``, ``hung_up_by`` (person, dialer-bxml, dialer-rest, timeout, or none while up
or never answered), ``first_audio_ms`` (the answer's first send → the first sound, in
ms), ``bxml_fetches`` (GETs of the answer and of requestUrls, duplicates and retries
included), ``bxml_error``, ``skipped_verbs``, ``control_requests`` (REST
call-control requests on the call: audio, gather, gather reads, hang-up, transfer),
``options`` (the create request's recording, transcription, sipHeaders and
callbackTimeout fields as sent).

``/_sim/stats``: ``created``; ``refused`` (by ``status category/code``, 429s of the
request limit included); ``requests`` (by endpoint kind: create, list, read, events,
update, audio, gather, gather-read, other); ``rate_limited``; ``bxml_fetches``;
``control_requests``; ``first_audio_ms`` (count, p50, p99, max).
"""

from __future__ import annotations

from dialer.dev.simulator.cli import main
from dialer.dev.simulator.config import OUTCOMES, PEOPLE, REFUSED_PREFIX, SimConfig
from dialer.dev.simulator.core import Simulator

__all__ = ["OUTCOMES", "PEOPLE", "REFUSED_PREFIX", "SimConfig", "Simulator", "main"]
