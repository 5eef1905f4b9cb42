"""``python -m dialer.dev.simulator``: the same as ``dialer simulator``."""

from dialer.dev.simulator.cli import main

raise SystemExit(main())
