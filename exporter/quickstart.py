"""``recsys quickstart``: the whole product path on ml-100k, end to end, on a fresh machine.

Train SASRec with each item-embedding mode for a few epochs (results table), export the AlphaFuse run, start the
service on a free local port (in-process history store, so no Redis is needed), store a real user's history with
``POST /events``, print the ``POST /recommend`` answer with item titles, add a new movie from its text alone with
``POST /items`` and show where it ranks. With ``--keep-serving`` the service then stays up until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["add_quickstart_command", "serving"]

# written the way the ml-100k catalogue's fields compose (title; year; genres)
NEW_MOVIE = {"item_id": "new-movie-1", "text": "Toy Story 2; 1999; Animation, Children's, Comedy"}


def add_quickstart_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from training.config import add_override_option

    quick = sub.add_parser(
        "quickstart",
        help="ml-100k end to end: train, export, serve, recommend (downloads it if needed)",
    )
    quick.add_argument("--run-dir", type=Path, default=Path("runs/quickstart"))
    quick.add_argument("--modes", nargs="+", default=["id", "llminit", "alphafuse"])
    quick.add_argument(
        "--epochs", type=int, default=5, help="training epochs per mode (a short run)"
    )
    add_override_option(quick)
    quick.add_argument("--port", type=int, default=0, help="service port (default: any free port)")
    quick.add_argument("--keep-serving", action="store_true", help="leave the service running")
    quick.set_defaults(func=quickstart)


def quickstart(args: argparse.Namespace) -> int:
    from exporter.export import export_run
    from training.cli import train_quickstart

    runs, prepared = train_quickstart(args.run_dir, args.modes, args.epochs, args.overrides)
    serving_mode = "alphafuse" if "alphafuse" in runs else args.modes[-1]
    artifact = export_run(runs[serving_mode], args.run_dir / "artifacts")
    print(f"\nexported {serving_mode} to {artifact}")
    ds = prepared.dataset
    titles = dict(zip(ds.item_ids, ds.item_texts, strict=True))
    user = 0
    history = [ds.item_ids[i] for i in ds.items[ds.offsets[user] : ds.offsets[user + 1]]][-20:]
    with serving(args.run_dir / "artifacts", args.port) as (base, client):
        print(f"service: {base} (OpenAPI at {base}/docs)")
        events = [{"user_id": ds.user_ids[user], "item_id": item} for item in history]
        client.post("/events", json={"events": events}).raise_for_status()
        body = {"user_id": ds.user_ids[user], "k": 10}
        answer = client.post("/recommend", json=body).json()
        print(
            f"\nuser {ds.user_ids[user]}, last items: "
            + " | ".join(titles[i] for i in history[-5:])
        )
        print(f"POST /recommend {json.dumps(body)} ->")
        for rank, item in enumerate(answer["items"], 1):
            print(
                f"  {rank:2d}. {item['score']:7.3f}  {titles.get(item['item_id'], item['item_id'])}"
            )
        print(json.dumps(answer))
        _show_new_item(client, history, ds.item_ids)
        if args.keep_serving:
            print(
                f"\nserving at {base}; try: curl -s {base}/recommend -H 'Content-Type: application/json' "
                f"-d '{json.dumps(body)}'   (Ctrl-C to stop)"
            )
            _wait_forever()
    return 0


def _show_new_item(client: Any, history: list[str], item_ids: list[str]) -> None:
    if client.post("/items", json={"items": [NEW_MOVIE]}).status_code != 200:
        return
    everything = client.post(
        "/score",
        json={"requests": [{"history": history, "item_ids": [*item_ids, NEW_MOVIE["item_id"]]}]},
    ).json()["results"][0]["scores"]
    rank = 1 + sum(s > everything[-1] for s in everything[:-1])
    print(
        f"\nPOST /items {NEW_MOVIE['text']!r} (text only, ID part zero): it ranks {rank} of "
        f"{len(everything)} for this user"
    )


@contextmanager
def serving(artifact_root: Path, port: int, **settings: Any) -> Iterator[tuple[str, Any]]:
    """Run the service on ``artifact_root`` in a background thread (in-process store); yield (base URL, client).

    ``settings`` are extra ``service.settings.Settings`` fields (e.g. ``max_history``).
    """
    import httpx
    import uvicorn

    from service.app import create_app
    from service.settings import Settings

    app = create_app(Settings(artifact=artifact_root, redis_url=None, **settings))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the service did not start; see the log above")
        time.sleep(0.05)
    bound = server.servers[0].sockets[0].getsockname()[1]
    base = f"http://127.0.0.1:{bound}"
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            yield base, client
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _wait_forever() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
