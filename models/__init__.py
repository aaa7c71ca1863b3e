"""sxtwin package."""
