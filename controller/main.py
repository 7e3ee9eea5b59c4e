"""`tpmon controller`: load settings, start the HTTP API and the agent link, run until a signal."""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any

log = logging.getLogger("tpmon.controller")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML file with a [controller] table (default: built-in defaults)")
    parser.add_argument("--http-host", help="HTTP listen address (default 0.0.0.0)")
    parser.add_argument("--http-port", type=int, help="HTTP port (default 3090)")
    parser.add_argument("--link-endpoint", help="ZeroMQ endpoint agents connect to (default tcp://*:3091)")
    parser.add_argument("--data-dir", help="where the config store lives (default ./data)")
    parser.add_argument("--stations", type=int, help="number of stations Station-1..N (default 12)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    parser.add_argument("--tls-cert", help="PEM certificate chain: serve HTTPS (TLS 1.3 only); needs --tls-key")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert (unencrypted)")
    parser.add_argument("--insecure", action="store_true", default=None,
                        help="plaintext agent link without CURVE (not authenticated or encrypted; logs a warning)")


def run(args: argparse.Namespace) -> int:
    # Imported here so `tpmon --help` and other subcommands do not pay for aiohttp and zmq.
    from controller.http import logs
    from controller.settings import load_settings
    from shared.config import ConfigError

    overrides = {key: getattr(args, key, None) for key in
                 ("http_host", "http_port", "link_endpoint", "data_dir", "stations", "log_level",
                  "tls_cert", "tls_key", "insecure")}
    try:
        settings = load_settings(args.config, overrides=overrides)
    except ConfigError as exc:
        logs.configure("INFO")
        log.error("configuration error: %s", exc)
        return 2
    logs.configure(settings.log_level)
    try:
        return asyncio.run(serve(settings))
    except KeyboardInterrupt:
        return 0


async def serve(settings: Any) -> int:
    import zmq
    from aiohttp import web

    from controller.app import create_app
    from controller.app_keys import SERVICES
    from controller.http.tls import server_context
    from controller.security.secret_files import SecretError
    from shared.config import ConfigError

    try:
        ssl_context = server_context(settings.tls_cert, settings.tls_key) if settings.tls else None
        app = create_app(settings)
    except (SecretError, ConfigError, OSError) as exc:  # unreadable secrets or keys: say which, no traceback
        log.error("controller cannot start: %s", exc)
        return 1
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    try:
        await runner.setup()  # opens the store and binds the agent link
        site = web.TCPSite(runner, settings.http_host, settings.http_port, reuse_address=True,
                           ssl_context=ssl_context)
        await site.start()
    except (OSError, zmq.ZMQError, ConfigError) as exc:
        log.error("controller cannot start: %s", exc)
        await runner.cleanup()
        return 1
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::") else settings.http_host
    scheme = "https" if settings.tls else "http"
    log.info("controller ready: %s://%s:%d/api/v1/snapshots, agent link %s, data %s",
             scheme, host, settings.http_port, app[SERVICES].link.endpoint, settings.store_path,
             extra={"metadata": {"httpPort": settings.http_port, "link": app[SERVICES].link.endpoint}})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("controller stopping")
    await runner.cleanup()
    return 0
