"""What an answered call hears and what its person does: BXML scripts and gathers.

A BXML call (created with ``callbackHttpMethod`` GET) runs the document its receiver
answers the ``answer`` GET with, verb by verb, on the scheduler; a Gather's or a
Redirect's requestUrl reply runs next. A REST call (POST) hears what the dialer asks for
through ``/audio`` and ``/gather`` (control.py). Both play sounds and run gathers the
same way, so their admin records compare. All methods run under the simulator's lock.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from functools import partial

from dialer.dev.simulator.base import SimBase
from dialer.dev.simulator.bxml import (
    BxmlError,
    Gather,
    Hangup,
    Other,
    Pause,
    Redirect,
    Sound,
    Transfer,
    parse,
)
from dialer.dev.simulator.calls import Call, GatherRun, Outgoing
from dialer.dev.simulator.people import plan_gather, press_result
from dialer.dev.simulator.protocol import iso

logger = logging.getLogger(__name__)


class ScriptMixin(SimBase):
    # -- the person's patience ------------------------------------------------------------

    def _settle(self, call: Call) -> None:
        """Arm the person's hang-up when the call has gone quiet; disarm it while
        something plays, a gather runs, the script steps or its next BXML is awaited."""
        if call.ended or call.state != "active":
            return
        if call.playing is not None or call.gather or call.stepping or call.awaiting:
            if call.idle_armed:
                call.idle_armed = False
                call.idle_token += 1
            return
        if call.idle_armed:
            return
        call.idle_armed = True
        call.idle_token += 1
        token = call.idle_token
        if call.person == "stay" and call.transferred_to is None:
            delay, who = self._config.stay_seconds, "timeout"
        else:
            delay, who = self._config.talk_time, "person"
        self._later(
            call, delay, lambda: self._hang_up(call, who), when=lambda: call.idle_token == token
        )

    def _hang_up(self, call: Call, who: str) -> None:
        """End the call now (``who``: person, dialer-bxml, dialer-rest, timeout). A gather
        in progress ends first, with reason hung-up; nothing of the script runs after."""
        if call.ended:
            return
        call.hung_up_by = who
        run = call.gather
        if run is not None and run.state == "started":
            self._complete_gather(call, run, "hung-up", run.digits)
        call.script.clear()
        call.stepping, call.awaiting, call.playing = False, None, None
        call.step_token += 1
        call.idle_armed = False
        call.idle_token += 1
        self._occur(call, "hangup", {"cause": "NORMAL_CLEARING"})

    def _hear(self, call: Call, sound: dict, prompt: bool = False) -> None:
        """The person starts hearing ``sound`` (an audio record) now."""
        entry = dict(sound)
        entry["at"] = round(time.time() - (call.active_at or time.time()), 3)
        if prompt:
            entry["prompt"] = True
        call.audio.append(entry)
        if call.first_audio_at is None:
            call.first_audio_at = time.monotonic()

    def _transfer(self, call: Call, to: str, whisper: list[dict]) -> None:
        """Bridge the call to ``to``: the person talks for ``talk_time``, then hangs up."""
        call.transferred_to = to
        call.whisper = whisper
        call.script.clear()
        call.stepping = False
        call.step_token += 1
        call.playing = None
        call.idle_armed = False  # the talk with whoever answers starts now
        call.idle_token += 1
        self._settle(call)

    # -- BXML ---------------------------------------------------------------------------

    def _fetch(self, call: Call, name: str, url: str, timeout_ms: int, payload: dict) -> None:
        """GET a verb's requestUrl; its reply is the script's next BXML."""
        fetch = next(self._fetch_ids)
        queued = self._emit(call, name, payload, url=url, fetch=fetch, timeout_ms=timeout_ms)
        call.awaiting = fetch if queued else None

    def _bxml_reply(
        self, call: Call, item: Outgoing, ok: bool, body: bytes, url: str, problem: str
    ) -> None:
        """The first delivery attempt of a fetch is done (``ok``: a 2xx reply came from
        ``url``). Only the first attempt of the awaited fetch counts: a duplicate, or a
        retry after the person was left in silence, runs nothing."""
        if item.fetch is None or item.fetch != call.awaiting or call.ended:
            return
        call.awaiting = None
        if not ok:
            call.bxml_error = f"{item.name}: {problem}"
            call.script.clear()
            self._settle(call)
            return
        try:
            verbs = parse(body, url)
        except BxmlError as exc:
            if item.name == "answer" or body.strip():
                call.bxml_error = f"{item.name}: {exc}"
                call.script.clear()
                self._settle(call)
                return
            verbs = []  # an empty reply to a gather or redirect: nothing new
        # A gather's reply runs next, instead of what followed the Gather; an empty one
        # lets the rest of the document go on.
        if verbs or item.name != "gather":
            call.script = deque(verbs)
        self._advance(call)

    def _advance(self, call: Call) -> None:
        """Run the script's verbs from where it stands until one takes time."""
        call.step_token += 1
        call.stepping = False
        token = call.step_token
        config = self._config

        def after(seconds: float) -> None:
            call.stepping = True
            self._later(
                call, seconds, lambda: self._advance(call), when=lambda: call.step_token == token
            )

        while call.script and not call.ended:
            verb = call.script.popleft()
            if isinstance(verb, Sound):
                self._hear(call, verb.record())
                after(config.speech_seconds)
                break
            if isinstance(verb, Pause):
                after(verb.seconds * config.time_scale)
                break
            if isinstance(verb, Hangup):
                self._hang_up(call, "dialer-bxml")
                return
            if isinstance(verb, Transfer):
                if not verb.transfer_to:  # a transfer with nowhere to go hangs up
                    self._hang_up(call, "dialer-bxml")
                    return
                self._transfer(call, verb.transfer_to, [s.record() for s in verb.whisper])
                return
            if isinstance(verb, Redirect):
                call.script.clear()  # later verbs never run
                payload = {
                    "eventType": "redirect",
                    "from": call.src,
                    "to": call.dst,
                    "callId": call.id,
                    "callUri": call.uri,
                    "callState": call.state,
                    "time": iso(time.time()),
                }
                if call.tag is not None:
                    payload["tag"] = call.tag
                self._fetch(call, "redirect", verb.request_url, verb.request_timeout_ms, payload)
                break
            if isinstance(verb, Gather):
                run = GatherRun(
                    id=self._new_id("g-"),
                    mode="bxml",
                    max_digits=verb.max_digits,
                    inter_digit_timeout=verb.inter_digit_timeout,
                    terminating=verb.terminating,
                    tag=verb.tag,
                    prompt=[s.record() for s in verb.prompt],
                    request_url=verb.request_url,
                    request_timeout_ms=verb.request_timeout_ms,
                )
                self._start_gather(call, run)
                return
            assert isinstance(verb, Other)
            call.skipped_verbs.append(verb.name)
        self._settle(call)

    # -- gathers ------------------------------------------------------------------------

    def _start_gather(self, call: Call, run: GatherRun) -> None:
        """Play the prompt and let the person act (people.py)."""
        config = self._config
        call.gather = run
        call.gather_runs[run.id] = run
        step = config.speech_seconds
        plan = plan_gather(
            call.person,
            call.person_rng,
            config,
            step * len(run.prompt),
            run.inter_digit_timeout * config.time_scale,
        )

        def playing() -> bool:
            return call.gather is run and not run.barged

        for i, sound in enumerate(run.prompt):
            if i == 0:
                self._hear(call, sound, prompt=True)
            else:
                self._later(call, i * step, partial(self._hear, call, sound, True), when=playing)
        self._later(
            call,
            plan.at,
            lambda: self._act(call, run, plan.act, plan.keys),
            when=lambda: call.gather is run,
        )
        self._settle(call)

    def _act(self, call: Call, run: GatherRun, act: str, keys: str | None) -> None:
        if act == "hangup":
            self._hang_up(call, "person")
            return
        if act == "wait" or keys is None:
            self._complete_gather(call, run, "inter-digit-timeout", "")
            return
        run.barged = True
        call.pressed = keys
        digits, reason, terminator = press_result(keys, run.max_digits, run.terminating)
        run.digits, run.terminator = digits, terminator
        if reason is not None:
            self._complete_gather(call, run, reason, digits)
            return
        self._later(
            call,
            run.inter_digit_timeout * self._config.time_scale,
            lambda: self._complete_gather(call, run, "inter-digit-timeout", digits),
            when=lambda: call.gather is run,
        )

    def _complete_gather(self, call: Call, run: GatherRun, reason: str, digits: str) -> None:
        """The gather ends: its event goes to the requestUrl (BXML, whose reply runs
        next) or to the call's callbackUrl (REST)."""
        if run.state != "started":
            return
        now = time.time()
        run.state, run.reason, run.digits, run.completed_at = "completed", reason, digits, now
        if call.gather is run:
            call.gather = None
        call.gathers.append(
            {"gatherId": run.id, "digits": digits, "reason": reason, "tag": run.tag}
        )
        payload = {
            "eventType": "gather",
            "state": "completed",
            "digits": digits,
            "reason": reason,
            "gatherId": run.id,
            "callId": call.id,
            "callUri": call.uri,
            "time": iso(now),
        }
        if run.terminator is not None:
            payload["terminatingDigit"] = run.terminator
        if run.tag is not None:
            payload["tag"] = run.tag
        hung_up = reason == "hung-up"
        if run.mode == "rest":
            self._emit(call, "gather", payload)
        elif run.request_url and hung_up:
            # The receiver hears of it, but nothing it answers can run.
            self._emit(
                call, "gather", payload, url=run.request_url, timeout_ms=run.request_timeout_ms
            )
        elif run.request_url:
            self._fetch(call, "gather", run.request_url, run.request_timeout_ms, payload)
        if hung_up:
            return
        if run.mode == "bxml" and call.awaiting is None:
            self._advance(call)  # no requestUrl (or the fetch was held): go on at once
        else:
            self._settle(call)
