"""Cython hot paths, each with a pure-Python twin chosen at import (TPMON_NO_EXTENSIONS=1 forces the twins)."""
