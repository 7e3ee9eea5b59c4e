"""`tpmon demo`: the controller and one simulated agent per station on this host.

Everything lives in one data folder (default `./.tpmon-demo`): generated configs, each
process's log, the controller's stores, the agents' persisted knobs and the agent link's
CURVE keys (`keys/`, made on the first run and reused after; `--insecure` runs the link in
plaintext). Ctrl-C stops every process; a second run first stops whatever a previous run
left behind (recorded in a pid file), so ports are never stale.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from controller.security import secret_files
from controller.security.tokens import TokenKeys, mint
from shared import curve_keys
from shared.atomic_file import atomic_write
from shared.topology import EXTENSIONS, Topology
from tpmon import toml_writer
from tpmon.demo_profiles import station_profile
from tpmon.processes import Child, kill_leftovers, port_in_use, tpmon_argv

MAX_RESTARTS = 3
DEMO_TOKEN_TTL_S = 24 * 3600  # renewed on every run


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stations", type=int, default=12, help="number of stations (default 12)")
    p.add_argument("--data-dir", default=".tpmon-demo", help="folder for configs, logs and stores")
    p.add_argument("--http-port", type=int, default=3090)
    p.add_argument("--link-port", type=int, default=3091)
    p.add_argument("--exporter-base-port", type=int, default=9401,
                   help="agent of Station-N exports on base+N-1 (0 disables the exporters)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--duration", type=float, default=0, help="stop after this many seconds (0 = until Ctrl-C)")
    p.add_argument("--insecure", action="store_true",
                   help="plaintext agent link without CURVE keys (not authenticated or encrypted)")


def run(args: argparse.Namespace) -> int:
    data = Path(args.data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    pidfile = data / "demo.pids"
    if killed := kill_leftovers(pidfile):
        print(f"stopped {len(killed)} processes left by a previous demo")
    topo = Topology(args.stations)
    busy = [p for p in _ports(args, topo) if port_in_use(p)]
    if busy:
        print(f"ports in use by something else: {', '.join(map(str, busy))}; stop it or pick other ports "
              "(--http-port, --link-port, --exporter-base-port)", file=sys.stderr)
        return 2
    keys = None if args.insecure else _link_keys(data / "keys", topo)
    if keys is None:
        print("WARNING: --insecure: the agent link is NOT authenticated or encrypted", file=sys.stderr)
    tokens = _demo_tokens(data)
    children = [_controller(args, data, keys)] + [_agent(args, data, s, i, keys)
                                                  for i, s in enumerate(topo.stations, 1)]
    stopping = False

    def _stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        for child in children:
            child.start()
        pidfile.write_text("\n".join(str(c.proc.pid) for c in children if c.proc))
        _print_banner(args, data, topo, tokens)
        _supervise(args, children, pidfile, lambda: stopping)
    finally:
        print("\nstopping …", flush=True)
        for child in reversed(children):
            child.stop()
        pidfile.unlink(missing_ok=True)
        print("all processes stopped")
    return 0


def _ports(args: argparse.Namespace, topo: Topology) -> list[int]:
    ports = [args.http_port, args.link_port]
    if args.exporter_base_port:
        ports += [args.exporter_base_port + i for i in range(len(topo.stations))]
    return ports


def _link_keys(keys: Path, topo: Topology) -> Path:
    """CURVE keys for the controller and every station, made on the first run and kept after."""
    made = curve_keys.provision(keys, list(topo.stations)).created
    if made:
        print(f"CURVE keys for the agent link written to {keys} ({len(made)} keypairs)")
    return keys


def _controller(args: argparse.Namespace, data: Path, keys: Path | None) -> Child:
    cfg = data / "controller.toml"
    link = {"insecure": True} if keys is None else {
        "curve_secret_key_file": str(curve_keys.secret_file(keys, curve_keys.CONTROLLER)),
        "curve_allowlist_file": str(keys / curve_keys.ALLOWLIST)}
    cfg.write_text(toml_writer.dumps({"controller": {
        "http_host": "127.0.0.1", "http_port": args.http_port,
        "link_endpoint": f"tcp://127.0.0.1:{args.link_port}",
        "data_dir": str(data / "controller"), "stations": args.stations, **link,
    }}))
    return Child("controller", tpmon_argv("controller", "--config", str(cfg)), data / "logs" / "controller.log")


def _agent(args: argparse.Namespace, data: Path, station: str, n: int, keys: Path | None) -> Child:
    profile = station_profile(n, args.seed)
    link = {"insecure": True} if keys is None else {
        "curve_secret_key_file": str(curve_keys.secret_file(curve_keys.agent_folder(keys), station)),
        "controller_public_key_file": str(curve_keys.public_file(keys, curve_keys.CONTROLLER))}
    doc: dict[str, dict[str, Any]] = {"agent": {
        "station": station, "controller": f"tcp://127.0.0.1:{args.link_port}",
        "exporter_host": "127.0.0.1",
        "exporter_port": args.exporter_base_port + n - 1 if args.exporter_base_port else 0,
        "data_dir": str(data / "agents" / station), "seed": args.seed * 1000 + n, **link,
    }}
    for ext in EXTENSIONS:
        doc[f"sim.{ext}"] = profile.conditions(ext)
    cfg = data / "agents" / f"{station}.toml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(f"# {station}: {profile.summary}\n" + toml_writer.dumps(doc))
    return Child(station, tpmon_argv("agent", "--config", str(cfg)), data / "logs" / f"agent-{station}.log")


def _demo_tokens(data: Path) -> dict[str, Path]:
    """An operator and an admin token for every station, written to <data>/tokens/ (0600).

    The JWT secret is the one the controller will use (<data>/controller/secrets/jwt.secret):
    created here on the first run so the tokens exist before the controller starts.
    """
    secret = secret_files.load_or_create(data / "controller" / "secrets" / "jwt.secret")
    keys = TokenKeys.from_files("HS256", secret)
    paths = {}
    for role in ("operator", "admin"):
        path = paths[role] = data / "tokens" / f"{role}.jwt"
        token = mint(keys, f"demo-{role}", role, None, DEMO_TOKEN_TTL_S)
        atomic_write(path, (token + "\n").encode(), mode=0o600)
    return paths


def _print_banner(args: argparse.Namespace, data: Path, topo: Topology, tokens: dict[str, Path]) -> None:
    base = f"http://127.0.0.1:{args.http_port}"
    print(f"tpmon demo: controller + {len(topo.stations)} agents ({len(topo.points)} points); data in {data}")
    print(f"  snapshots   {base}/api/v1/snapshots")
    print(f"  health      {base}/api/v1/health")
    print(f"  catalog     {base}/api/v1/catalog")
    print(f"  knobs       {base}/api/v1/config/knobs/Station-1/3333")
    print(f"  alerts      {base}/api/v1/alerts")
    print(f"  history     {base}/api/v1/snapshots/history?station=Station-4&extension=3333&timeRange=1h")
    print(f"  stream      ws://127.0.0.1:{args.http_port}/api/v1/ws   (Socket.IO: {base})")
    print(f"  api doc     {base}/api/v1/openapi.json")
    print(f"  controller  {base}/metrics")
    if args.exporter_base_port:
        last = args.exporter_base_port + len(topo.stations) - 1
        print(f"  agents      http://127.0.0.1:{args.exporter_base_port}/metrics … :{last}/metrics")
    print("  degraded    " + "; ".join(f"{s}: {station_profile(i, args.seed).summary}"
                                       for i, s in enumerate(topo.stations, 1)
                                       if station_profile(i, args.seed).degraded))
    for role, path in tokens.items():
        print(f"  {role:<12}{path.read_text().strip()}")
        print(f"  {'':<12}({role} token, saved in {path}; valid {DEMO_TOKEN_TTL_S // 3600} h, `tpmon token` mints others)")
    print(f"  try         export TOKEN=$(cat {tokens['operator']})")
    print(f"              curl -s -H \"Authorization: Bearer $TOKEN\" -X POST {base}/api/v1/config/knobs/Station-1/3333 "
          "-H 'Content-Type: application/json' -d '{\"agc_target_level\": -12}'")
    print(f"  logs        {data / 'logs'}    (Ctrl-C stops everything)", flush=True)


def _supervise(args: argparse.Namespace, children: list[Child], pidfile: Path, stopping) -> None:
    started = time.monotonic()
    next_status = started + 3
    while not stopping():
        if args.duration and time.monotonic() - started >= args.duration:
            return
        for child in children:
            code = child.exited()
            if code is None or stopping():
                continue
            print(f"{child.name} exited with {code}; last log lines:\n{child.tail()}", flush=True)
            if child.restarts >= MAX_RESTARTS:
                raise SystemExit(f"{child.name} keeps failing; see {child.log_path}")
            child.restarts += 1
            child.stop()
            child.start()
            pidfile.write_text("\n".join(str(c.proc.pid) for c in children if c.proc))
        if time.monotonic() >= next_status:
            print(_status_line(args.http_port), flush=True)
            next_status = time.monotonic() + 15
        time.sleep(0.2)


def _status_line(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=1) as resp:
            h = json.load(resp)
        return (f"[{time.strftime('%H:%M:%S')}] {h.get('status')}: {h.get('activeExtensions')} active points "
                f"on {h.get('activeStations')} stations, last data {h.get('lastDataUpdate')}")
    except Exception as exc:  # the controller may still be starting; the status line is informational
        return f"[{time.strftime('%H:%M:%S')}] controller not answering yet ({exc.__class__.__name__})"
