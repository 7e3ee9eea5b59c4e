"""Finding a controller's secret files from the command line (`tpmon token`, `tpmon sign`).

Order: an explicit file; the controller's config file (its data_dir and *_file keys); an
explicit data folder; the demo's folder under the current directory; ./data (the
controller's default data_dir). So in the folder where `tpmon demo` runs, no flag is needed.
"""
from __future__ import annotations

from pathlib import Path

DEMO_CONTROLLER_DIR = Path(".tpmon-demo") / "controller"
DEFAULT_DATA_DIR = Path("data")
RELATIVE = {"jwt": Path("secrets") / "jwt.secret", "signing": Path("secrets") / "signing.secret"}


class SecretNotFound(Exception):
    pass


def find_secret(kind: str, secret_file: str | None = None, config: str | None = None,
                data_dir: str | None = None, cwd: Path | None = None) -> Path:
    """The path of the `kind` ("jwt" or "signing") secret, or SecretNotFound listing where we looked."""
    if secret_file:
        return _existing(Path(secret_file))
    if config:
        from controller.settings import load_settings  # only this path needs the controller's settings
        settings = load_settings(config)
        return _existing(settings.jwt_secret_path if kind == "jwt" else settings.signing_secret_path)
    base = cwd or Path.cwd()
    candidates = [Path(data_dir)] if data_dir else [base / DEMO_CONTROLLER_DIR, base / DEFAULT_DATA_DIR]
    tried = [c / RELATIVE[kind] for c in candidates]
    for path in tried:
        if path.is_file():
            return path
    raise SecretNotFound(f"no {kind} secret found (looked at {', '.join(map(str, tried))}); pass --secret-file, "
                         "--config with the controller's config file, or --data-dir with its data folder")


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise SecretNotFound(f"secret file {path} does not exist (the controller creates it on first start)")
    return path
