"""python -m api [--host H] [--port P]: run the vitrine server."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import uvicorn
from pydantic import ValidationError

from api.app import create_app
from api.server import server_config
from api.settings import ServerSettings
from search.heap import limit_malloc_arenas
from search.logs import configure_logging


def _invalid_settings_message(exc: ValidationError) -> str:
    # One line per bad variable, named as it is set, instead of a pydantic traceback.
    lines = ["vitrine could not start: invalid settings"]
    for error in exc.errors():
        if not error["loc"]:  # a rule across settings: its message names them
            lines.append(f"  {error['msg'].removeprefix('Value error, ')}")
            continue
        name = "VITRINE_" + "_".join(str(part) for part in error["loc"]).upper()
        lines.append(f"  {name}={error.get('input')!r}: {error['msg']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    try:
        settings = ServerSettings()
    except ValidationError as exc:
        sys.exit(_invalid_settings_message(exc))
    parser = argparse.ArgumentParser(prog="python -m api", description="Run the vitrine HTTP server.")
    parser.add_argument("--host", default=settings.host, help=f"bind address (default {settings.host})")
    parser.add_argument("--port", type=int, default=settings.port, help=f"port (default {settings.port})")
    args = parser.parse_args(argv)

    limit_malloc_arenas(settings.malloc_arenas)  # before any thread starts (api/memory.py)
    configure_logging(settings.log_level)
    fatal: list[str] = []
    server: uvicorn.Server | None = None

    def on_fatal(message: str) -> None:
        fatal.append(message)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_fatal=on_fatal)
    config = server_config(app, args.host, args.port, log_config=None, access_log=True)
    server = uvicorn.Server(config)
    code = 0
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn shut down cleanly, then raised the Ctrl-C again: done
        code = 130
    if fatal:
        print(f"vitrine could not start.\n{fatal[0]}", file=sys.stderr)
    # Everything the server held is closed by now (the app's lifespan: index saved, export child
    # killed). The interpreter's own teardown of torch and OpenVINO, or a model still loading on its
    # daemon thread, would keep a stopped server alive for seconds: Ctrl-C ends it at once instead.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1 if fatal else code)


if __name__ == "__main__":
    main()
