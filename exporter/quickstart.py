"""``recsys quickstart``: the whole product path on ml-100k, end to end, on a fresh machine.

Train SASRec with each item-embedding mode for a few epochs (results table), export the AlphaFuse run, start the
service (``python -m service.cli`` as a child process) on a free local port with its in-process history store, so
no Redis is needed, store a real user's history with ``POST /events``, print the ``POST /recommend`` answer with
item titles, add a new movie from its text alone with ``POST /items`` and show where it ranks. With
``--keep-serving`` the service then stays up until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["add_quickstart_command", "serving"]

SERVICE_MODULE = (
    "service.cli"  # run by name in a child process: the exporter imports no service code
)
START_SECONDS = 120

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
def serving(artifact_root: Path, port: int = 0, **settings: Any) -> Iterator[tuple[str, Any]]:
    """Run the service on ``artifact_root`` as a child process (in-process store); yield (base URL, client).

    The child is ``python -m service.cli`` on 127.0.0.1:``port`` (0: a free one). ``settings`` are extra
    ``service.settings.Settings`` fields (e.g. ``max_history``), passed as their ``RECSYS_*`` variables; the
    service reads the rest of its environment as usual, except ``RECSYS_REDIS_URL``, which is left out.
    """
    import httpx

    port = port or _free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", SERVICE_MODULE, "--artifact", str(artifact_root)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    child = subprocess.Popen(command, env=_service_env(settings))
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            _wait_until_healthy(client, child)
            yield base, client
    finally:
        child.terminate()
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _service_env(settings: dict[str, Any]) -> dict[str, str]:
    """This environment without ``RECSYS_REDIS_URL``, plus ``settings``, with this project first on the path."""
    env = {k: v for k, v in os.environ.items() if k != "RECSYS_REDIS_URL"}
    env.update({f"RECSYS_{key.upper()}": str(value) for key, value in settings.items()})
    root = str(Path(__file__).resolve().parents[1])  # the folder that holds exporter/ and service/
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until_healthy(client: Any, child: subprocess.Popen[bytes]) -> None:
    """Poll ``GET /healthz`` until it answers 200 (the model is loaded); RuntimeError if the child exits first."""
    import httpx

    deadline = time.monotonic() + START_SECONDS
    while True:
        if child.poll() is not None:
            raise RuntimeError(
                f"the service exited with status {child.returncode}; see the log above"
            )
        try:
            if client.get("/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise RuntimeError(f"the service did not start in {START_SECONDS} s; see the log above")
        time.sleep(0.1)


def _wait_forever() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
