"""The one tpmon version string, read by the controller, the agent and the `tpmon` command alike."""
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _installed_version

try:
    VERSION = _installed_version("tpmon")  # pyproject.toml's version, as installed
except PackageNotFoundError:  # run from a source tree that was never installed
    VERSION = "0.0.0+source"
