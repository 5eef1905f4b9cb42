"""REST call control (docs/carrier.md, "Call control") and the non-create request limit.

``POST …/calls/{id}/audio`` speaks or plays into an active call (200; 403
``call-audio-invalid-state`` otherwise), with ``speak``/``playback`` events (``started``,
then ``done`` after ``speech_seconds``) to the call's callbackUrl. A new /audio cuts the
one playing; an empty ``sentence`` or ``fileUrl`` just stops it.

``POST …/calls/{id}/gather`` starts a gather (201, ``Location: …/gather/{gatherId}``;
409 ``call-duplicate-gather-error`` while one runs; 403 ``call-invalid-state`` when the
call is not active). Its prompt plays and the person acts as at a BXML Gather; the
``gather`` event goes to the call's callbackUrl. ``GET …/gather/{id}`` reads it.

``POST …/calls/{id}`` hangs up (``{"state": "completed"}``) or transfers
(``{"state": "transferring", "transferTo": …}``: 200 with the new leg's ``Location``).
"""

from __future__ import annotations

import math
import time

from dialer.dev.simulator.base import SimBase
from dialer.dev.simulator.calls import Call, GatherRun
from dialer.dev.simulator.protocol import (
    ApiError,
    error,
    forbidden,
    iso,
    not_found,
    validate_audio,
    validate_gather,
    validate_update,
)


class ControlMixin(SimBase):
    # -- the request limit ----------------------------------------------------------------

    def _admit_request(self, kind: str) -> None:
        """Count a request by endpoint kind; refuse one over ``request_rate`` with 429
        (docs/carrier.md, "Default limits": every endpoint but call creation, 1/s by
        default, ``X-RateLimit-Reset`` in epoch milliseconds). A refused request does not
        spend the budget."""
        with self._lock:
            self._requests[kind] = self._requests.get(kind, 0) + 1
            rate = self._config.request_rate
            if kind == "create" or rate is None:
                return
            now = time.monotonic()
            # "Averaged over 1 s": a rate under 1/s gets one request per 1/rate seconds.
            span = max(1.0, 1.0 / rate)
            window = self._request_window
            while window and window[0] <= now - span:
                window.popleft()
            if len(window) < max(1, int(rate * span + 1e-9)):
                window.append(now)
                return
            self._rate_limited += 1
            reset_ms = str(math.ceil((time.time() + window[0] + span - now) * 1000))
        raise ApiError(
            429,
            error(
                "too-many-requests",
                "rate-limit-reached",
                "the request rate limit was reached",
                [{"name": "rateLimitResetTime", "value": reset_ms}],
            ),
            {"X-RateLimit-Reset": reset_ms},
        )

    # -- call control ---------------------------------------------------------------------

    def _controlled(self, call_id: str) -> Call:
        call = self._get(call_id)
        call.control_requests += 1
        return call

    def _audio(self, call_id: str, body: object) -> None:
        sound, tag = validate_audio(body)
        with self._lock:
            call = self._controlled(call_id)
            if call.state != "active":
                raise forbidden(
                    "call-audio-invalid-state",
                    f"the audio for call {call_id} could not be updated",
                    call_id,
                )
            if call.playing is not None:
                self._audio_done(call)
            if not (sound.get("text") or sound.get("url")):
                self._settle(call)
                return
            call.play_token += 1
            token = call.play_token
            call.playing = token
            call.playing_event = ("speak" if sound["verb"] == "SpeakSentence" else "playback", tag)
            self._hear(call, sound)
            self._audio_event(call, "started")
            self._settle(call)
            self._later(
                call,
                self._config.speech_seconds,
                lambda: self._audio_done(call),
                when=lambda: call.playing == token,
            )

    def _audio_done(self, call: Call) -> None:
        self._audio_event(call, "done")
        call.playing = None
        self._settle(call)

    def _audio_event(self, call: Call, status: str) -> None:
        name, tag = call.playing_event
        payload = {
            "eventType": name,
            "callId": call.id,
            "callUri": call.uri,
            "status": status,
            "time": iso(time.time()),
        }
        if name == "speak":
            payload["state"] = "PLAYBACK_START" if status == "started" else "PLAYBACK_STOP"
        if tag is not None:
            payload["tag"] = tag
        self._emit(call, name, payload)

    def _rest_gather(self, call_id: str, body: object) -> str:
        """Start a gather; return its Location."""
        spec = validate_gather(body)
        with self._lock:
            call = self._controlled(call_id)
            if call.state != "active":
                raise forbidden(
                    "call-invalid-state",
                    f"unable to gather on call {call_id}: invalid call state {call.state}",
                    call_id,
                )
            if call.gather is not None:
                raise ApiError(
                    409,
                    error(
                        "conflict",
                        "call-duplicate-gather-error",
                        f"DTMF digits are already being gathered for call {call_id}",
                        [{"name": "callId", "value": call_id}],
                    ),
                )
            run = GatherRun(
                id=self._new_id("g-"),
                mode="rest",
                max_digits=spec["max_digits"],
                inter_digit_timeout=spec["inter_digit_timeout"],
                terminating=spec["terminating"],
                tag=spec["tag"],
                prompt=spec["prompt"],
            )
            self._start_gather(call, run)
            return f"{call.uri}/gather/{run.id}"

    def _gather_resource(self, call_id: str, gather_id: str) -> dict:
        with self._lock:
            call = self._controlled(call_id)
            run = call.gather_runs.get(gather_id)
            if run is None:
                raise not_found("resource-not-found", "gatherId", gather_id)
            return run.resource(call.uri)

    def _update(self, call_id: str, body: object, base: str) -> dict[str, str]:
        """Hang up or transfer; return the response's headers."""
        change = validate_update(body)
        with self._lock:
            call = self._controlled(call_id)
            if change["state"] == "completed":
                if not call.ended:
                    self._hang_up(call, "dialer-rest")
                return {}
            if call.state != "active":
                raise forbidden(
                    "call-invalid-state",
                    f"unable to update call {call_id}: invalid call state {call.state}",
                    call_id,
                )
            whisper = []
            if "whisperAudio" in change:
                whisper.append(validate_audio(change["whisperAudio"])[0])
            self._transfer(call, change["transferTo"], whisper)
            leg = self._new_id("c-")
            return {"Location": f"{base}/v1/users/{self._config.user_id}/calls/{leg}"}
