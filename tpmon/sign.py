"""`tpmon sign`: the X-Tpmon-* headers that sign one critical API request (HMAC-SHA256).

    tpmon sign --method POST --path /api/v1/batch/apply-settings --data @body.json

prints `-H '…'` curl arguments (or `--format headers`: one `Name: value` per line, for
`curl -H @file`; `--format json`). Sign exactly the bytes you send (`curl --data-binary`,
not `-d`, which strips newlines from files) and the path and query exactly as the URL has
them. In the folder where `tpmon demo` runs it finds the demo's signing secret with no flags.
With `--send URL` it sends the signed request itself and prints the answer.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import urllib.error
import urllib.request
from pathlib import Path

FORMATS = ("curl", "headers", "json")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default="POST", help="HTTP method (default POST)")
    p.add_argument("--path", required=True,
                   help="path and query exactly as requested, e.g. /api/v1/batch/apply-settings")
    p.add_argument("--data", default="", help="the body: @file, @- for stdin, or the text itself (default empty)")
    p.add_argument("--format", choices=FORMATS, default="curl",
                   help="curl: -H arguments (default); headers: Name: value lines; json: an object")
    p.add_argument("--secret-file", help="the signing secret file (default: via --config or --data-dir, else "
                                         "./.tpmon-demo/controller/secrets/signing.secret, else ./data/…)")
    p.add_argument("--config", help="the controller's TOML config: its data_dir and signing_secret_file are used")
    p.add_argument("--data-dir", help="the controller's data folder (secret in <dir>/secrets/signing.secret)")
    p.add_argument("--send", metavar="URL", help="send the signed request to this base URL "
                                                 "(e.g. http://localhost:3090) and print the answer")
    p.add_argument("--token", help="bearer token for --send (default: $TPMON_TOKEN)")


def run(args: argparse.Namespace) -> int:
    from controller.security import secret_files
    from controller.security.signing import sign
    from tpmon.secret_lookup import SecretNotFound, find_secret

    try:
        if not args.path.startswith("/"):
            raise ValueError(f"--path {args.path!r} must start with / (the path and query, not a full URL)")
        body = read_body(args.data)
        secret = secret_files.load(find_secret("signing", args.secret_file, args.config, args.data_dir))
    except (ValueError, OSError, SecretNotFound, secret_files.SecretError) as exc:
        print(f"tpmon sign: {exc}", file=sys.stderr)
        return 2
    headers = sign(secret, args.method.upper(), args.path, body)
    if args.send:
        token = args.token or os.environ.get("TPMON_TOKEN")
        return send(args.send, args.method.upper(), args.path, body, headers, token)
    print(render(headers, args.format))
    return 0


def read_body(data: str) -> bytes:
    """`@file` as its bytes, `@-` from stdin, anything else as UTF-8 text."""
    if data == "@-":
        return sys.stdin.buffer.read()
    if data.startswith("@"):
        return Path(data[1:]).read_bytes()
    return data.encode("utf-8")


def render(headers: dict[str, str], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(headers, indent=2)
    if fmt == "headers":
        return "\n".join(f"{name}: {value}" for name, value in headers.items())
    return " ".join(f"-H {shlex.quote(f'{name}: {value}')}" for name, value in headers.items())


def send(base: str, method: str, path: str, body: bytes, headers: dict[str, str], token: str | None) -> int:
    """Send the signed request; print status and body; 0 for a 2xx answer."""
    request = urllib.request.Request(base.rstrip("/") + path, data=body or None, method=method,
                                     headers={**headers, "Content-Type": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, answer = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, answer = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        print(f"tpmon sign: cannot reach {base}: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return 2
    print(status, file=sys.stderr)
    print(answer.decode("utf-8", "replace"))
    return 0 if 200 <= status < 300 else 1
