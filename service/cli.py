"""``recsys serve``: run the service with uvicorn (one process; scale with replicas, one per core).

Options override the ``RECSYS_*`` environment variables of ``service.settings.Settings``.
"""

from __future__ import annotations

import argparse
import logging
import signal
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["UVICORN_OPTIONS", "add_serve_arguments", "serve"]

# how the service runs under uvicorn (the serving benchmark's bare-HTTP floor app runs with the same options)
UVICORN_OPTIONS: dict[str, Any] = {"access_log": False}


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--artifact", type=Path, help="artifact dir, or a root with CURRENT")
    parser.add_argument(
        "--redis-url", help="e.g. redis://127.0.0.1:6379/0 (default: in-process store)"
    )
    parser.add_argument("--key-prefix", help="prefix of every Redis key (default recsys)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--threads", type=int, help="ONNX Runtime / FAISS threads (default 1)")
    parser.add_argument("--reload-poll-seconds", type=float, help="watch CURRENT and hot-swap")
    parser.add_argument("--log-level", default="info")


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.app import create_app
    from service.settings import Settings

    overrides: dict[str, Any] = {
        key: value
        for key, value in {
            "artifact": args.artifact,
            "redis_url": args.redis_url,
            "key_prefix": args.key_prefix,
            "threads": args.threads,
            "reload_poll_seconds": args.reload_poll_seconds,
        }.items()
        if value is not None
    }
    app = create_app(Settings(**overrides))
    # uvicorn answers SIGTERM with a graceful shutdown (in-flight requests finish), then re-raises it to the handler
    # it found: this one ends the process with status 0 instead of death by signal
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, **UVICORN_OPTIONS)
    return 0


def _exit_cleanly(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m service.cli``: the same as ``recsys serve`` without the training packages installed."""
    parser = argparse.ArgumentParser(prog="recsys serve", description=__doc__)
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return serve(args)


if __name__ == "__main__":
    raise SystemExit(main())
