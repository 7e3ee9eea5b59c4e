"""`tpmon token`: mint an API token (JWT with the plan's claims) for a role and some stations.

    tpmon token --role operator --stations Station-1,Station-2 --ttl 1h

prints the token alone on stdout, so `TOKEN=$(tpmon token --role viewer)` works. In the
folder where `tpmon demo` runs it finds the demo's secret with no further flags.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--role", required=True, help="viewer, operator or admin")
    p.add_argument("--stations", default="*",
                   help="comma-separated stations the token may see and touch (default: all, '*')")
    p.add_argument("--ttl", default="1h", help="lifetime: 90s, 30m, 8h, 7d (default 1h)")
    p.add_argument("--subject", help="the token's sub (who; default: <role>@cli)")
    p.add_argument("--permissions", help="comma-separated subset of the role's permissions (default: all of them)")
    p.add_argument("--secret-file", help="HS* shared secret (default: found as below)")
    p.add_argument("--config", help="the controller's TOML config: its data_dir and jwt_* keys are used")
    p.add_argument("--data-dir", help="the controller's data folder (secret in <dir>/secrets/jwt.secret)")
    p.add_argument("--algorithm", default=None, help="HS256 (default), or RS256/ES256/… with --private-key")
    p.add_argument("--private-key", help="PEM private key for RS*/ES*/PS* tokens")


def parse_ttl(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"--ttl {text!r}: use a positive number with s, m, h or d (e.g. 1h)")
    return int(match.group(1)) * TTL_UNITS[match.group(2) or "s"]


def run(args: argparse.Namespace) -> int:
    from controller.security import secret_files
    from controller.security.principal import ROLES
    from controller.security.tokens import TokenKeys, mint
    from tpmon.secret_lookup import SecretNotFound, find_secret

    try:
        ttl = parse_ttl(args.ttl)
        if args.role not in ROLES:
            raise ValueError(f"--role {args.role!r}: use one of {', '.join(ROLES)}")
        stations = [s.strip() for s in args.stations.split(",") if s.strip()]
        algorithm = args.algorithm or _configured_algorithm(args.config)
        if algorithm.startswith("HS"):
            secret = secret_files.load(find_secret("jwt", args.secret_file, args.config, args.data_dir))
            keys = TokenKeys.from_files(algorithm, secret)
        else:
            if not args.private_key:
                raise ValueError(f"{algorithm} tokens are signed with a private key: pass --private-key")
            keys = TokenKeys.from_files(algorithm, private_key_file=Path(args.private_key))
        permissions = [p.strip() for p in args.permissions.split(",")] if args.permissions else None
        token = mint(keys, args.subject or f"{args.role}@cli", args.role,
                     None if "*" in stations else stations, ttl, permissions)
    except (ValueError, OSError, SecretNotFound, secret_files.SecretError) as exc:
        print(f"tpmon token: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def _configured_algorithm(config: str | None) -> str:
    if not config:
        return "HS256"
    from controller.settings import load_settings
    return load_settings(config).jwt_algorithm
