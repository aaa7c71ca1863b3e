"""sxtwin command line (depends on every other package; nothing depends on it)."""
