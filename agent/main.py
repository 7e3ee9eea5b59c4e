"""`tpmon agent --config agent.toml`: one station host's agent (both extensions)."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
from typing import Any

from prometheus_client import CollectorRegistry

from agent.config import load
from agent.exporter import Exporter
from shared.config import ConfigError

log = logging.getLogger("agent")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="agent.toml (see agent/agent.example.toml); defaults apply without one")
    parser.add_argument("--insecure", action="store_true",
                        help="plaintext link to the controller without CURVE keys (logs a warning)")


def hot_paths() -> str:
    """Which implementation each ext/ hot path runs ("cython" or "python"), for the startup log."""
    import ext.dsp
    import ext.jitter
    import ext.latency
    import ext.sequence
    import ext.vad
    return ", ".join(f"{m.__name__.split('.')[-1]} {m.IMPLEMENTATION}"
                     for m in (ext.dsp, ext.jitter, ext.sequence, ext.latency, ext.vad))


def run(args: argparse.Namespace) -> int:
    try:
        cfg = load(args.config)
        if args.insecure:
            cfg = dataclasses.replace(cfg, insecure=True)
    except ConfigError as exc:
        print(f"tpmon agent: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=cfg.log_level.upper(), stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s agent[{cfg.station}] %(name)s: %(message)s")
    from agent.dsp import DspChain  # heavy imports after the config is known to be good
    from agent.link import ControllerLink, client_keys
    from agent.station import StationAgent

    try:
        keys = client_keys(cfg)  # before anything starts: no keys and not insecure is a refusal
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    link = ControllerLink(cfg.controller, cfg.station, curve=keys)
    agent = StationAgent(cfg, lambda seed: DspChain(sample_rate=16000, frame_samples=320, seed=seed), link=link)
    exporter = Exporter(agent.snapshot, CollectorRegistry())
    try:
        if cfg.exporter_port:
            exporter.serve(cfg.exporter_host, cfg.exporter_port)
    except OSError as exc:
        log.error("exporter cannot listen on %s:%d: %s", cfg.exporter_host, cfg.exporter_port, exc)
        agent.close()
        return 1

    def _stop(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        agent.stop()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    log.info("serving %s (extensions %s), controller %s, exporter %s, hot paths %s", cfg.station,
             ", ".join(cfg.extensions), cfg.controller,
             f"{cfg.exporter_host}:{cfg.exporter_port}" if cfg.exporter_port else "off", hot_paths())
    try:
        agent.run()
    finally:
        exporter.close()
        agent.close()
    log.info("stopped")
    return 0
