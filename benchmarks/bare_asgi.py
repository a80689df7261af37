"""The bare-HTTP floor of the serving benchmark: a minimal ASGI app under the service's own server settings.

It answers every request with one fixed JSON body (a ``/recommend``-shaped answer of k=10 items) after reading the
request body, with uvicorn run exactly as ``recsys serve`` runs the service (``service.cli.UVICORN_OPTIONS``): no
validation, no model, no store. What a request costs here is what any route of the service costs at least.

    taskset -c 0 .venv/bin/python benchmarks/bare_asgi.py --port 8392
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ANSWER = json.dumps(
    {
        "items": [{"item_id": str(100 + i), "score": 1.0 - i / 100} for i in range(10)],
        "model_version": "bare",
        "source": "model",
        "unknown_items": [],
        "degraded": False,
        "filtered_short": False,
    }
).encode()
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":  # lifespan: accept startup and shutdown
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": message["type"] + ".complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    while (await receive()).get("more_body", False):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})


def main() -> None:
    import uvicorn

    from service.cli import UVICORN_OPTIONS

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, default=8392)
    args = p.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", **UVICORN_OPTIONS)


if __name__ == "__main__":
    main()
