"""The `tpmon` command: one console script whose subcommands start tpmon's processes."""
__version__ = "0.1.0"
