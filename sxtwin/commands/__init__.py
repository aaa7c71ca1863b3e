"""Sub-commands of the sxtwin CLI, one module per command group."""
