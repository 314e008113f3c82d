"""One module per group of CLI subcommands; each function takes parsed args, returns an exit code."""
