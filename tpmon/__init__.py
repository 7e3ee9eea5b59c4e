"""The `tpmon` command: one console script whose subcommands start tpmon's processes."""
from shared.version import VERSION as __version__  # noqa: F401  (the one version string lives in shared/)
