"""Serving benchmark: a real model, 1e5 items, the service on one core and the load generator on the other.

Steps: train (or reuse) SASRec-AlphaFuse on amazon14-sports, export it (``--index auto`` picks the PQ fast scan for
the grown catalogue), start ``recsys serve`` pinned to core 0 against Redis, grow the catalogue to ``--items``
through ``POST /items`` (dataset texts reused with a suffix), load real user histories through ``POST /events``,
then drive ``/recommend`` (k=10, history from Redis) and ``/score`` (100 candidates) from ``benchmarks/loadgen.py``
pinned to core 1: closed loop at several concurrencies and open loop at fixed rates; then ``/recommend`` with
filters passing 1%, 10% and 50% of the catalogue and ``/similar`` (``benchmarks/filter_rows.py``) closed loop at
``--filter-concurrency``. Ends with the per-stage breakdown read from ``/metrics`` and the floors
(``benchmarks/serve_floors.py`` on the exported artifact, and the compute floor on the grown catalogue): the service
as a share of what HTTP alone and its own compute allow on this machine, and its capacity at p99 <= 5 ms as a share
of the grown compute floor.

    .venv/bin/python benchmarks/serve_load.py                      # ~15 min; writes benchmarks/results/serve.json
    .venv/bin/python benchmarks/serve_load.py --run-dir runs/sports-alphafuse-s0 --duration 5
    .venv/bin/python benchmarks/serve_load.py --epochs 1 --set embedding.dim=256 --set embedding.null_dim=32 \
        --set embedding.id_dropout=0.5 --semantic-query-beta 0.5 --out benchmarks/results/serve_width_d256.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis
from filter_rows import filtered_rows, new_item_attributes
from results_io import save_json

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    args = _args()
    rng = random.Random(0)
    run_dir = args.run_dir or _train(args)
    from core.artifact import ITEM_IDS_FILE, MANIFEST_FILE, resolve_artifact
    from exporter.export import export_run
    from training.data.readers import load_dataset
    from training.items.text_embeddings import embed_item_texts
    from training.run.rundir import RunDir

    config = RunDir(run_dir).read_config()
    dataset = load_dataset(config.data.source)
    root = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    # exact_threshold 0: auto picks for the grown catalogue, not for the trained items alone
    export_run(
        run_dir,
        root,
        index_kind=args.index,
        exact_threshold=0,
        version="bench",
        semantic_query_beta=args.semantic_query_beta,
        ddim_steps=args.ddim_steps,
    )
    artifact = resolve_artifact(root)
    manifest = json.loads((artifact / MANIFEST_FILE).read_text())

    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    server = _start_server(artifact, args, prefix)
    base = f"http://127.0.0.1:{args.port}"
    results: dict[str, Any] = {}
    try:
        with httpx.Client(base_url=base, timeout=300) as client:
            results["grow"] = _grow_catalogue(client, dataset.item_texts, args.items, rng)
            grown = json.loads((artifact / ITEM_IDS_FILE).read_text())
            grown += [f"new-{i}" for i in range(results["grow"]["added"])]
            grown += [f"fresh-{i}" for i in range(200)]  # added by _new_item_latency
            results["new_item"] = _new_item_latency(client, dataset.item_texts, rng)
            users = _load_histories(client, dataset, args.users, rng)
            item_ids = list(dataset.item_ids)
            rec = [{"user_id": u, "k": 10} for u in users]
            score = [
                {"requests": [{"user_id": u, "item_ids": rng.sample(item_ids, 100)}]} for u in users
            ]
            _warm(client, rec[:200], score[:50])
            results["served_recall_at_10"] = _served_recall(client, users[:100], grown)
            before = client.get("/metrics").text
            results["recommend"] = _drive(args, "/recommend", rec)
            results["score"] = _drive(args, "/score", score, rates=args.score_rates)
            results["stages"] = _stage_breakdown(before, client.get("/metrics").text)
            results["filtered"] = _drive_filtered(args, users, item_ids, len(grown), results)
            if args.profile:
                results["profile"] = _profile(args, server.pid, rec)
    finally:
        server.terminate()
        server.wait(timeout=30)
        drop_prefix(args.redis_url, prefix)
    try:
        if args.floor_rounds:
            text = embed_item_texts(dataset.item_texts, config.text)  # the training cache's copy
            results["floors"] = _floors(args, root, text, results["recommend"])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    payload = {
        "dataset": config.name,
        "model": manifest["model_kind"],
        "embedding": manifest["embedding_mode"],
        "trained_items": manifest["num_items"],
        "index": manifest["index"],
        "max_len": manifest["encoder"]["max_len"],
        "dim": manifest["dims"]["d"],
        "semantic_query_beta": args.semantic_query_beta,
        "ddim_steps": manifest["encoder"].get("ddim_steps"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores; service on core 0, load on core 1",
        "freeze_heap": not args.no_freeze_heap,
        # the service's history cache, as its environment sets it (unset: the service's default)
        "history_cache_users": os.environ.get("RECSYS_HISTORY_CACHE_USERS", "default"),
        **results,
    }
    save_json(args.out, payload, indent=2)
    _print_table(payload)
    return 0


def _args() -> argparse.Namespace:
    from training.config import add_override_option

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--run-dir", type=Path, help="a trained run to serve (default: train one)")
    p.add_argument("--config", type=Path, default=REPO / "training/configs/amazon14-sports.toml")
    p.add_argument("--epochs", type=int, default=5)
    add_override_option(p, "config override for the trained model, e.g. embedding.dim=256")
    p.add_argument(
        "--semantic-query-beta",
        type=float,
        default=0.0,
        help="export with the semantic query (as `recsys export --semantic-query-beta`)",
    )
    p.add_argument(
        "--ddim-steps",
        type=int,
        default=None,
        help="dreamrec: the sampler's step count in the exported graph (as `recsys export --ddim-steps`)",
    )
    p.add_argument("--index", default="auto", choices=["auto", "flat", "pq", "hnsw", "ivf"])
    p.add_argument("--items", type=int, default=100_000, help="catalogue size after POST /items")
    p.add_argument("--users", type=int, default=5_000)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per load level")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    p.add_argument("--rates", type=int, nargs="+", default=[250, 500, 750, 1000, 1500])
    p.add_argument("--score-rates", type=int, nargs="+", default=[200, 400])
    p.add_argument(
        "--filter-concurrency",
        type=int,
        nargs="+",
        default=[1, 16],
        help="closed-loop levels of the filtered /recommend and the /similar rows",
    )
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--port", type=int, default=8391)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks/results/serve.json")
    p.add_argument(
        "--floor-rounds",
        type=int,
        default=3,
        help="rounds of benchmarks/serve_floors.py on the served artifact afterwards (0: skip the floors)",
    )
    p.add_argument(
        "--no-freeze-heap",
        action="store_true",
        help="serve with RECSYS_FREEZE_HEAP=false (the A/B of the service's gc.freeze after loading)",
    )
    p.add_argument(
        "--profile",
        type=Path,
        help="also sample the service with py-spy under c=64 /recommend; folded stacks go here",
    )
    return p.parse_args()


def _train(args: argparse.Namespace) -> Path:
    suffix = "".join(f"-{o}" for o in args.overrides).replace("/", "_")
    from training.config import load_config
    from training.experiment import run_experiment
    from training.run.rundir import RunDir

    run_dir = REPO / "runs" / f"serve-bench-{args.config.stem}-e{args.epochs}{suffix}"
    if RunDir(run_dir).metrics.exists():
        return run_dir

    config = load_config(args.config, [f"train.max_epochs={args.epochs}", *args.overrides])
    run_experiment(config, run_dir)
    return run_dir


def _start_server(artifact: Path, args: argparse.Namespace, prefix: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "service.cli", "--artifact", str(artifact)]
    cmd += ["--redis-url", args.redis_url, "--key-prefix", prefix, "--port", str(args.port)]
    cmd += ["--log-level", "warning"]
    env = {"RECSYS_MAX_ITEMS_PER_REQUEST": "512", "RECSYS_COLD_SYNC_SECONDS": "0"}
    env["RECSYS_FREEZE_HEAP"] = "false" if args.no_freeze_heap else "true"
    return start_pinned(cmd, args.port, env)


def start_pinned(
    cmd: list[str], port: int, env: dict[str, str], cwd: Path = REPO
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` (an HTTP server on ``port``) pinned to core 0; return once ``/readyz`` answers 200."""
    server = subprocess.Popen(["taskset", "-c", "0", *cmd], cwd=cwd, env={**os.environ, **env})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    server.kill()
    raise RuntimeError("the service did not become ready in 120 s")


def _grow_catalogue(
    client: httpx.Client, texts: list[str], target: int, rng: random.Random
) -> dict[str, Any]:
    have = _index_items(client)
    need = max(0, target - have)
    t0 = time.perf_counter()
    for start in range(0, need, 512):
        batch = [
            {
                "item_id": f"new-{i}",
                "text": f"{rng.choice(texts)} (variant {i})",
                "attributes": new_item_attributes(i),
            }
            for i in range(start, min(need, start + 512))
        ]
        r = client.post("/items", json={"items": batch})
        r.raise_for_status()
    seconds = time.perf_counter() - t0
    return {
        "added": need,
        "seconds": round(seconds, 1),
        "items_per_second": round(need / seconds, 1),
    }


def _index_items(client: httpx.Client) -> int:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("rec_index_items "):
            return int(float(line.split()[1]))
    raise RuntimeError("rec_index_items not in /metrics")


def _new_item_latency(client: httpx.Client, texts: list[str], rng: random.Random) -> dict[str, Any]:
    """POST one item, then at once score it: it must be known the moment POST /items returns."""
    add_ms, visible = [], 0
    for i in range(200):
        item = f"fresh-{i}"
        t0 = time.perf_counter()
        client.post("/items", json={"items": [{"item_id": item, "text": rng.choice(texts)}]})
        add_ms.append((time.perf_counter() - t0) * 1e3)
        r = client.post("/score", json={"requests": [{"history": [item], "item_ids": [item]}]})
        visible += r.json()["results"][0]["unknown_items"] == []
    ms = np.asarray(add_ms)
    return {
        "post_items_p50_ms": round(float(np.percentile(ms, 50)), 2),
        "post_items_p99_ms": round(float(np.percentile(ms, 99)), 2),
        "visible_right_after_return": f"{visible}/200",
    }


def _served_recall(client: httpx.Client, users: list[str], item_ids: list[str]) -> float:
    """Recall@10 of /recommend's answers on the grown catalogue, against exact scores from /score.

    The index's recall is measured at export on the trained items only; the catalogue grown through POST /items
    is another distribution. Exact inner products come from /score over every item (in chunks); a returned item
    counts as a hit when its exact score reaches the exact 10th best (ties count).
    """
    hits = total = 0
    for user in users:
        got = client.post("/recommend", json={"user_id": user, "k": 10, "exclude_seen": False})
        found = [i["item_id"] for i in got.raise_for_status().json()["items"]]
        exact: list[float] = []
        for start in range(0, len(item_ids), 10_000):
            chunk = {"user_id": user, "item_ids": item_ids[start : start + 10_000]}
            r = client.post("/score", json={"requests": [chunk]}).raise_for_status()
            exact += [s for s in r.json()["results"][0]["scores"] if s is not None]
        scores = dict(zip(item_ids, exact, strict=True))
        tenth = float(np.sort(np.asarray(exact))[-10])
        hits += sum(scores[i] >= tenth - 1e-4 * max(1.0, abs(tenth)) for i in found)
        total += 10
    return round(hits / total, 4)


def _load_histories(
    client: httpx.Client, dataset: Any, n_users: int, rng: random.Random
) -> list[str]:
    users = rng.sample(range(dataset.num_users), min(n_users, dataset.num_users))
    events: list[dict[str, str]] = []
    for u in users:
        seq = dataset.items[dataset.offsets[u] : dataset.offsets[u + 1]]
        events += [{"user_id": dataset.user_ids[u], "item_id": dataset.item_ids[i]} for i in seq]
    for start in range(0, len(events), 512):
        client.post("/events", json={"events": events[start : start + 512]}).raise_for_status()
    return [dataset.user_ids[u] for u in users]


def _warm(client: httpx.Client, rec: list[dict[str, Any]], score: list[dict[str, Any]]) -> None:
    for body in rec:
        client.post("/recommend", json=body).raise_for_status()
    for body in score:
        client.post("/score", json=body).raise_for_status()


def _drive(
    args: argparse.Namespace,
    path: str,
    bodies: list[dict[str, Any]],
    rates: list[int] | None = None,
    concurrency: list[int] | None = None,
) -> list[dict[str, Any]]:
    closed = args.concurrency if concurrency is None else concurrency
    levels: list[dict[str, Any]] = [{"mode": "closed", "concurrency": c} for c in closed]
    levels += [
        {"mode": "open", "rate": r, "connections": 64}
        for r in (args.rates if rates is None else rates)
    ]
    return [drive_level(args.port, args.duration, path, level, bodies) for level in levels]


def drive_level(
    port: int, duration: float, path: str, level: dict[str, Any], bodies: list[dict[str, Any]]
) -> dict[str, Any]:
    """One load level from ``benchmarks/loadgen.py`` pinned to core 1: the level and the generator's result."""
    spec = {"host": "127.0.0.1", "port": port, "path": path, "duration": duration}
    spec.update(level, bodies=bodies)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    cmd = ["taskset", "-c", "1", sys.executable, str(REPO / "benchmarks/loadgen.py"), f.name]
    result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    Path(f.name).unlink()
    print(path, level, result, flush=True)
    return {**level, **result}


def _drive_filtered(
    args: argparse.Namespace,
    users: list[str],
    item_ids: list[str],
    total: int,
    results: dict[str, Any],
) -> list[dict[str, Any]]:
    """The filtered /recommend rows and /similar (``filter_rows``), closed loop at ``--filter-concurrency``."""
    out = []
    for row in filtered_rows(users, item_ids, total, results["grow"]["added"]):
        levels = _drive(
            args, row["path"], row["bodies"], rates=[], concurrency=args.filter_concurrency
        )
        out.append(
            {"label": row["label"], "selectivity": round(row["selectivity"], 4), "levels": levels}
        )
    return out


def _profile(args: argparse.Namespace, pid: int, bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """Sample the service with py-spy during one more closed-loop /recommend level (c=64): where the core goes.

    Writes the folded stacks to ``args.profile`` and returns the frames with the largest shares of samples, by self
    time (the frame on top of the stack) and inclusive (anywhere on it).
    """
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    cmd = [spy, "record", "--pid", str(pid), "--duration", str(int(args.duration)), "--rate", "200"]
    cmd += ["--format", "raw", "--nolineno", "--output", str(args.profile), "--nonblocking"]
    recorder = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # let py-spy attach before the load starts
    level = _drive(args, "/recommend", bodies, concurrency=[64], rates=[])[0]
    _, err = recorder.communicate(timeout=120)
    if recorder.returncode != 0:
        raise RuntimeError(f"py-spy failed: {err.decode()[-500:]}")
    self_time: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in Path(args.profile).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f for f in stack.split(";") if f]  # "func (file.py)", outermost first
        if not frames:
            continue
        n = int(count)
        total += n
        self_time[frames[-1]] = self_time.get(frames[-1], 0) + n
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n

    def top(counts: dict[str, int]) -> list[dict[str, Any]]:
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:25]
        return [{"frame": frame, "share": n / max(total, 1)} for frame, n in ranked]

    return {"load": level, "samples": total, "self": top(self_time), "inclusive": top(inclusive)}


def _histograms(text: str) -> dict[str, dict[str, float]]:
    """stage -> {'sum', 'count', and cumulative bucket counts by le} from a Prometheus text scrape."""
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if not line.startswith("rec_stage_duration_seconds") or "_created" in line:
            continue
        name, value = line.rsplit(" ", 1)
        labels = dict(kv.split("=") for kv in name[name.index("{") + 1 : -1].split(","))
        stage = labels["stage"].strip('"')
        key = "sum" if "_sum" in name else "count" if "_count" in name else labels["le"].strip('"')
        out.setdefault(stage, {})[key] = float(value)
    return out


def _stage_breakdown(before: str, after: str) -> dict[str, dict[str, float]]:
    a, b = _histograms(before), _histograms(after)
    table = {}
    for stage, h in b.items():
        count = h["count"] - a.get(stage, {}).get("count", 0.0)
        if count <= 0:
            continue
        total = h["sum"] - a.get(stage, {}).get("sum", 0.0)
        buckets = sorted(
            (float(k), v - a.get(stage, {}).get(k, 0.0))
            for k, v in h.items()
            if k not in ("sum", "count")
        )
        p99 = next((le for le, c in buckets if c >= 0.99 * count), float("inf"))
        table[stage] = {
            "count": int(count),
            "mean_ms": round(total / count * 1e3, 3),
            "p99_le_ms": p99 * 1e3,
        }
    return table


def drop_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(f"{prefix}:*", count=10_000))
    for start in range(0, len(keys), 10_000):
        client.delete(*keys[start : start + 10_000])


P99_TARGET_MS = 5.0


def _floors(
    args: argparse.Namespace, root: Path, text: np.ndarray, recommend: list[dict[str, Any]]
) -> dict[str, Any]:
    """The served model against its floors, one core each as above (``benchmarks/serve_floors.py``):

    - ``rows`` and ``ratios``: the bare-HTTP floor, the compute floor and the service with inline and with Redis
      histories on the exported artifact (its trained items), each row as a share of its floors;
    - ``compute_grown``: the compute floor with the catalogue grown to ``--items`` as the run above grew it;
    - ``capacity_rps``: the highest open-loop rate above whose p99 was at most 5 ms with no errors, and
      ``capacity_over_compute``: that rate over the grown compute floor's best batch.
    """
    script = str(REPO / "benchmarks/serve_floors.py")
    with tempfile.TemporaryDirectory(prefix="serve-floors-") as tmp:
        out, grow_from = Path(tmp) / "floors.json", Path(tmp) / "text.npy"
        np.save(grow_from, text.astype(np.float32), allow_pickle=False)
        cmd = [sys.executable, script, "--artifact", str(root), "--out", str(out)]
        cmd += ["--rounds", str(args.floor_rounds), "--redis-url", args.redis_url]
        subprocess.run(cmd, check=True, cwd=REPO)
        record = json.loads(out.read_text())[-1]
        cmd = ["taskset", "-c", "0", sys.executable, script, "--compute-only"]
        cmd += [
            "--artifact",
            str(root),
            "--grow-from",
            str(grow_from),
            "--grow-to",
            str(args.items),
        ]
        cmd += ["--batches", "1", "8", "32"]
        grown = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    capacity = max(
        (
            r["rate"]
            for r in recommend
            if r["mode"] == "open" and r["errors"] == 0 and r["p99_ms"] <= P99_TARGET_MS
        ),
        default=0,
    )
    best = max(level["rps"] for level in grown.values())
    keep = ("concurrency", "requests", "errors", "rps", "p50_ms", "p99_ms", "rps_rounds")
    return {
        "artifact": record["artifact"],
        "settings": record["settings"],
        "rows": {
            name: [{k: level[k] for k in keep} for level in levels]
            for name, levels in record["rows"].items()
        },
        "compute": record["compute"],
        "ratios": record["ratios"],
        "compute_grown": grown,
        "capacity_rps": capacity,
        "capacity_over_compute": round(capacity / best, 3),
    }


def _print_floors(floors: dict[str, Any]) -> None:
    print(f"\nfloors on the exported artifact ({floors['artifact']['items']} items):")
    for level, values in floors["ratios"].items():
        shown = {k: v for k, v in values.items() if "over" in k and "cpu" not in k}
        print(f"  {level}: {json.dumps(shown)}")
    grown = {b: level["rps"] for b, level in floors["compute_grown"].items()}
    print(
        f"  compute floor on the grown catalogue (req/s by batch): {json.dumps(grown)}; capacity at p99 <= "
        f"{P99_TARGET_MS:g} ms: {floors['capacity_rps']} req/s = {floors['capacity_over_compute']} of it"
    )


def _print_table(payload: dict[str, Any]) -> None:
    print(
        f"\n{payload['dataset']} {payload['embedding']}: {payload['trained_items']} trained items, index "
        f"{payload['index']['kind']} (recall@10 {payload['index']['recall_at_10']}), grown to "
        f"{payload['trained_items'] + payload['grow']['added']} items"
    )
    print(
        f"{'route':<11}{'load':>14}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}"
    )
    for route in ("recommend", "score"):
        for r in payload[route]:
            load = f"c={r['concurrency']}" if r["mode"] == "closed" else f"{r['rate']}/s open"
            print(
                f"/{route:<10}{load:>14}{r['rps']:>9.0f}{r['p50_ms']:>9.2f}{r['p95_ms']:>9.2f}"
                f"{r['p99_ms']:>9.2f}{r['errors']:>8}"
            )
    if payload.get("filtered"):
        print(
            f"{'filtered row (share passing)':<32}{'load':<6}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}",
            end="",
        )
        print(f"{'p99 ms':>9}{'errors':>8}")
    for row in payload.get("filtered", []):
        for r in row["levels"]:
            label = f"{row['label']} ({row['selectivity']:.1%})"
            print(
                f"{label:<32}{'c=' + str(r['concurrency']):<6}{r['rps']:>9.0f}{r['p50_ms']:>9.2f}"
                f"{r['p95_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['errors']:>8}"
            )
    print("stages (mean ms, p99 bucket bound):", json.dumps(payload["stages"]))
    print("served recall@10 on the grown catalogue (vs exact):", payload["served_recall_at_10"])
    print(
        "new item:",
        json.dumps(payload["new_item"]),
        "| catalogue growth:",
        json.dumps(payload["grow"]),
    )
    if "floors" in payload:
        _print_floors(payload["floors"])
    if "profile" in payload:
        prof = payload["profile"]
        print(
            f"\nprofile under c=64 /recommend ({prof['samples']} samples, {prof['load']['rps']:.0f} req/s):"
        )
        for kind in ("self", "inclusive"):
            print(f"  top frames by {kind} share:")
            for entry in prof[kind][:15]:
                print(f"    {entry['share']:6.1%}  {entry['frame']}")


if __name__ == "__main__":
    raise SystemExit(main())
