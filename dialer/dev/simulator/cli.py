"""``dialer simulator``: serve the simulator until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from dialer.dev.simulator.config import OUTCOMES, SimConfig, check_config
from dialer.dev.simulator.core import Simulator

logger = logging.getLogger("dialer.dev.simulator")


def _outcome_weights(raw: str) -> dict[str, float]:
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        name, sep, value = part.partition("=")
        if not sep or name not in OUTCOMES:
            raise argparse.ArgumentTypeError(
                f"expected name=weight pairs over {', '.join(OUTCOMES)}, got {part!r}"
            )
        try:
            weights[name] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"weight of {name} is not a number") from None
    return weights


def main(argv: list[str] | None = None) -> int:
    """Serve the simulator until SIGTERM or SIGINT."""
    defaults = SimConfig()
    parser = argparse.ArgumentParser(
        prog="dialer simulator", description="A local stand-in for the Catapult v1 Voice API."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--user-id", default=defaults.user_id)
    parser.add_argument("--token", default=defaults.token)
    parser.add_argument("--secret", default=defaults.secret)
    parser.add_argument("--numbers", help="comma-separated from numbers on the account")
    parser.add_argument(
        "--refuse-from",
        dest="refused_numbers",
        help="comma-separated from numbers refused with 403 number-access-denied",
    )
    parser.add_argument("--rate", type=float, help="account calls/s over --rate-window")
    parser.add_argument("--number-rate", type=float, help="calls/s per from number")
    parser.add_argument("--rate-window", type=float, default=defaults.rate_window)
    parser.add_argument(
        "--request-rate",
        type=float,
        help="requests/s per account on every endpoint but create-call (429 over it)",
    )
    parser.add_argument(
        "--outcomes",
        type=_outcome_weights,
        help="weights, e.g. answered=0.6,busy=0.2,no-answer=0.2",
    )
    parser.add_argument("--answer-delay", type=float, default=defaults.answer_delay)
    parser.add_argument("--talk-time", type=float, default=defaults.talk_time)
    parser.add_argument("--no-answer-delay", type=float)
    parser.add_argument(
        "--people",
        default=defaults.people,
        help="what people do at a gather, e.g. press=0.7,wait=0.1,hangup=0.1,stay=0.1",
    )
    parser.add_argument(
        "--keys", default=defaults.keys, help="keys pressing people press, e.g. 1=0.6,2=0.3,9=0.1"
    )
    parser.add_argument("--press-delay", type=float, default=defaults.press_delay)
    parser.add_argument("--speech-seconds", type=float, default=defaults.speech_seconds)
    parser.add_argument(
        "--time-scale",
        type=float,
        default=defaults.time_scale,
        help="multiplies a script's Pause and interDigitTimeout seconds",
    )
    parser.add_argument("--stay-seconds", type=float, default=defaults.stay_seconds)
    for name in ("500", "503", "429", "rate-limit", "ambiguous"):
        parser.add_argument(f"--fault-{name}", type=float, default=0.0, metavar="P")
    parser.add_argument("--ambiguous-hold", type=float, default=defaults.ambiguous_hold)
    parser.add_argument("--duplicate-callbacks", type=float, default=0.0, metavar="P")
    parser.add_argument("--reorder-callbacks", type=float, default=0.0, metavar="P")
    parser.add_argument(
        "--no-tag-on-all-events",
        dest="tag_on_all_events",
        action="store_false",
        help="send the tag only on answer events",
    )
    parser.add_argument("--callback-retries", type=int, default=defaults.callback_retries)
    parser.add_argument("--credit", type=int)
    parser.add_argument(
        "--location-style", choices=("relative", "absolute", "mixed"), default="mixed"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    options = vars(args)
    host, port = options.pop("host"), options.pop("port")
    numbers = options.pop("numbers")
    options["numbers"] = [n.strip() for n in numbers.split(",") if n.strip()] if numbers else None
    refused = options.pop("refused_numbers")
    options["refused_numbers"] = tuple(n.strip() for n in (refused or "").split(",") if n.strip())
    if options["outcomes"] is None:
        options["outcomes"] = defaults.outcomes
    try:
        config = SimConfig(**options)
        check_config(config)
    except ValueError as exc:
        parser.error(str(exc))

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    simulator = Simulator(config)
    url = simulator.start(host, port)
    logger.info("carrier simulator listening on %s (user id %s)", url, config.user_id)

    done = threading.Event()
    previous = {}
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, lambda *_: done.set())
    except ValueError:  # not the main thread: rely on KeyboardInterrupt
        pass
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        simulator.stop()
        logger.info("carrier simulator stopped")
    return 0
