"""`tpmon <subcommand>`: each subcommand lives in its own package and is imported lazily."""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module with `add_arguments(parser)` and `run(args) -> int`, help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("tpmon.demo", "controller and simulated stations on this host"),
    "controller": ("controller.main", "the central service (HTTP :3090, agent link :3091)"),
    "agent": ("agent.main", "the station agent (both extensions of one station)"),
    "catalog": ("tpmon.catalog_doc", "print the metric and knob catalogs as Markdown"),
    "token": ("tpmon.token", "mint an API token (JWT) with a role and station scope"),
    "keys": ("tpmon.keys", "generate CURVE keypairs for the controller and agents, and the allow-list"),
    "sign": ("tpmon.sign", "sign a critical API request (HMAC-SHA256) and print or send it"),
}


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """Only the chosen subcommand's module is imported, so `tpmon agent` never loads the controller."""
    parser = argparse.ArgumentParser(prog="tpmon", description="Monitor and tune the speech translation pipeline.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        p.set_defaults(_module=module)
        if name == chosen:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(chosen).parse_args(argv)
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
