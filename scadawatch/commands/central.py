"""`scadawatch central --config central.toml`: the multi-site control room (see central/)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.logs import setup_logging
from gateway.site.loader import ConfigError
from scadawatch.cli import EXIT_FAILURE, EXIT_OK, UsageError
from scadawatch.commands.serve import unwritable

if TYPE_CHECKING:
    from central.config import CentralFile

log = logging.getLogger("scadawatch")


def is_central_file(path: str) -> bool:
    """Whether `path` is a central file (it has `[central]`), not a site file."""
    try:
        return "central" in tomllib.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        return False  # the site file loader says what is wrong with it


def load(path: str) -> CentralFile:
    from central.config import load_central

    try:
        return load_central(path)
    except ConfigError as e:
        raise UsageError(f"invalid central file\n{e}") from None


def main(args: argparse.Namespace) -> int:
    from api.server import ListenError

    setup_logging()
    config = load(args.config)
    if (why := unwritable(config.site.data_dir)) is not None:
        raise UsageError(f"{args.config}: site.data_dir: {why}")
    try:
        asyncio.run(serve(config))
    except ListenError as e:
        log.error("event=api_unavailable error=%r", str(e))
        print(f"scadawatch central: error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


async def serve(config: CentralFile, port: int | None = None,
                stop: asyncio.Event | None = None) -> None:
    """The host and its API until `stop` (or Ctrl-C / SIGTERM)."""
    from api.server import serve as serve_http
    from central.app import create_central_app
    from central.host import Central
    from gateway.runtime import install_stop_signals

    stop = stop or asyncio.Event()
    install_stop_signals(stop)
    central = Central(config)
    app = create_central_app(central)
    api = config.api
    tls = (api.tls_cert, api.tls_key) if api.tls_cert and api.tls_key else None
    tasks = [asyncio.create_task(central.run()),
             asyncio.create_task(serve_http(app, api.host, port or api.port, tls=tls))]
    stopping = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([*tasks, stopping], return_when=asyncio.FIRST_COMPLETED)
        for task in done - {stopping}:
            task.result()  # a failure (the API could not listen) is raised here
    finally:
        for task in (*tasks, stopping):
            task.cancel()
        await asyncio.gather(*tasks, stopping, return_exceptions=True)
        central.close()
