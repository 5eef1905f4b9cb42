"""The operator's web console (``dialer web``): see docs/console.md."""
