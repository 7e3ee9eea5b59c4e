"""`tpmon keys`: CURVE keypairs for the controller and the agents, and the allow-list binding each key to its station.

    tpmon keys --out data/keys --stations 12      # a whole set: controller + Station-1..12
    tpmon keys --out data/keys --station Station-13          # add one agent to an existing set
    tpmon keys --out data/keys --station Station-5 --force   # rotate one agent's key

Existing keys are never replaced silently: asking for a key that exists is refused unless
--force. The controller keypair is created when missing; only --force with --stations (a
whole new set) replaces it, since every agent then needs the new controller.key.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from shared.topology import station_name, station_number

if TYPE_CHECKING:
    from shared import curve_keys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="data/keys",
                   help="keys folder (default data/keys: where a controller with data_dir ./data looks)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--stations", type=int, default=None, help="a set for Station-1..N (default 12)")
    which.add_argument("--station", help="one agent's keypair (Station-N), added to the allow-list")
    p.add_argument("--force", action="store_true", help="replace keys that already exist")


def run(args: argparse.Namespace) -> int:
    from shared import curve_keys

    try:
        stations, whole_set = _requested(args)
    except ValueError as exc:
        print(f"tpmon keys: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    existing = [s for s in stations if curve_keys.secret_file(curve_keys.agent_folder(out), s).exists()]
    if existing and not args.force:
        print(f"tpmon keys: {out} already holds keys for {_names(existing)}; not replacing them "
              "(agents using them would be locked out). Use --force to replace them, or "
              "--station Station-N to add a station.", file=sys.stderr)
        return 1
    try:
        done = curve_keys.provision(out, stations, replace_controller=args.force and whole_set,
                                    replace_agents=args.force)
    except curve_keys.KeyFileError as exc:
        print(f"tpmon keys: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"tpmon keys: cannot write {out}: {exc.strerror}", file=sys.stderr)
        return 1
    _report(out, done)
    return 0


def _requested(args: argparse.Namespace) -> tuple[list[str], bool]:
    """(stations, whether this is a whole set) from --station / --stations."""
    if args.station is not None:
        if station_number(args.station) is None:
            raise ValueError(f"--station {args.station!r}: use a station name like Station-5")
        return [args.station], False
    count = 12 if args.stations is None else args.stations
    if not 1 <= count <= 9999:
        raise ValueError(f"--stations {count}: use 1 to 9999")
    return [station_name(n) for n in range(1, count + 1)], True


def _names(stations: list[str]) -> str:
    return ", ".join(stations) if len(stations) <= 4 else f"{stations[0]} … {stations[-1]} ({len(stations)} stations)"


def _report(out: Path, done: curve_keys.Provisioned) -> None:
    from shared import curve_keys

    agents = [s for s in done.created if s != curve_keys.CONTROLLER]
    if curve_keys.CONTROLLER in done.created:
        print(f"controller keypair   {curve_keys.secret_file(out, curve_keys.CONTROLLER)} (secret, 0600) "
              f"and {curve_keys.public_file(out, curve_keys.CONTROLLER)}")
    else:
        print(f"controller keypair   kept: {curve_keys.secret_file(out, curve_keys.CONTROLLER)}")
    if agents:
        print(f"agent keypairs       {curve_keys.agent_folder(out)}/<station>.key_secret (0600) and .key "
              f"for {_names(agents)}")
    allowed = curve_keys.load_allowlist(out / curve_keys.ALLOWLIST)
    print(f"allow-list           {out / curve_keys.ALLOWLIST} ({len(allowed)} stations)")
    print("controller: curve_secret_key_file and curve_allowlist_file point here "
          "(default <data_dir>/keys/controller.key_secret and <data_dir>/keys/allowlist.toml)")
    print("each agent: copy its Station-N.key_secret and controller.key to its host (the secret over a "
          "private channel), then set curve_secret_key_file and controller_public_key_file in agent.toml")
