"""The ``recsys`` command: one entry point for every role.

recsys quickstart                      # ml-100k: train, export, serve, recommend (prints the answer)
recsys data     training/configs/amazon14-beauty.toml
recsys train    training/configs/amazon14-beauty.toml --set embedding.mode="id" --run-dir runs/beauty-id
recsys evaluate runs/beauty-id
recsys export   runs/beauty-id --out artifacts [--index hnsw] [--version V] [--no-current] [--fields A,B]
recsys serve    --artifact artifacts --redis-url redis://127.0.0.1:6379/0
recsys events   events.csv --redis-url redis://127.0.0.1:6379/0   # the served events, as training data

``serve`` is handed over to the service's own entry point (``python -m service.cli``) before anything else is
imported, so it works in the serving image, which has no torch and no training packages installed.
"""

from __future__ import annotations

import argparse
import logging
import runpy
import sys
from collections.abc import Sequence
from pathlib import Path

from exporter.quickstart import SERVICE_MODULE

__all__ = ["HANDED_OVER", "add_events_command", "add_export_command", "hand_over", "main"]


# subcommands that belong to another package's own entry point: handed over by module name, before anything
# else is imported (the serving image has no torch and no training packages)
HANDED_OVER = {"serve": SERVICE_MODULE}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in HANDED_OVER:
        return hand_over(HANDED_OVER[argv[0]], argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # it logs each CPU variant it tries
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def hand_over(module: str, argv: Sequence[str]) -> int:
    """Run ``python -m <module> <argv>`` in this process and return its exit status.

    The module is found by name at run time, so ``exporter`` has no import of it.
    """
    saved = sys.argv
    sys.argv = [module, *argv]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        raise
    finally:
        sys.argv = saved
    return 0


def _parser() -> argparse.ArgumentParser:
    from exporter.quickstart import add_quickstart_command
    from training.cli import add_training_commands

    parser = argparse.ArgumentParser(
        prog="recsys", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    add_quickstart_command(sub)
    add_training_commands(sub)
    add_export_command(sub)
    add_events_command(sub)
    sub.add_parser("serve", help="run the service (recsys serve --help)", add_help=False)
    return parser


def add_export_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``export RUN_DIR [--out] [--index] [--exact-threshold] [--version] [--no-current]
    [--semantic-query-beta] [--ddim-steps] [--fields]``."""
    export = subparsers.add_parser(
        "export", help="export a trained run as a versioned serving artifact"
    )
    export.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    export.add_argument("--out", type=Path, default=Path("artifacts"), help="artifact root")
    export.add_argument(
        "--index",
        choices=["auto", "flat", "pq", "hnsw", "ivf"],
        default="auto",
        help="FAISS index kind (auto: exact below --exact-threshold items, else pq: PQ fast scan + exact re-scoring)",
    )
    export.add_argument("--exact-threshold", type=int, default=20_000, metavar="N")
    export.add_argument("--version", help="default: <UTC time>-<items.npy sha256 prefix>")
    export.add_argument(
        "--no-current", action="store_true", help="do not point <out>/CURRENT at the new version"
    )
    export.add_argument(
        "--semantic-query-beta",
        type=float,
        default=0.0,
        metavar="BETA",
        help="alphafuse: add a content term of this relative size (from the last history items' language "
        "coordinates) to every user vector, which lifts items added from their text (default 0: off)",
    )
    export.add_argument(
        "--ddim-steps",
        type=int,
        default=None,
        metavar="N",
        help="dreamrec: unroll the guided DDIM sampler with N denoiser calls (default: the run's diffusion.steps)",
    )
    export.add_argument(
        "--fields",
        type=_field_list,
        default=None,
        metavar="A,B,..",
        help="catalogue fields kept for the service's filters, e.g. categories,brand,price; 'none' keeps none "
        "(default: every field of the dataset's catalogue but free text such as titles)",
    )
    export.set_defaults(func=_export)


def _field_list(value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    return [] if names == ["none"] else names


def _export(args: argparse.Namespace) -> int:
    from core.artifact import open_artifact
    from exporter.export import export_run

    path = export_run(
        args.run_dir,
        args.out,
        index_kind=args.index,
        exact_threshold=args.exact_threshold,
        version=args.version,
        make_current=not args.no_current,
        semantic_query_beta=args.semantic_query_beta,
        ddim_steps=args.ddim_steps,
        fields=args.fields,
    )
    m = open_artifact(path, verify=False)
    text = m.text_encoder.name if m.text_encoder is not None else "none"
    lines = [
        f"artifact: {path}",
        f"  items           {m.num_items} ({m.embedding_mode}, d={m.dims.d}, d_n={m.dims.d_n})",
        f"  index           {m.index.kind} {m.index.params} recall@10 {m.index.recall_at_10:.4f}",
        f"  encoder parity  {m.encoder.parity_max_abs_diff:.2e} max abs diff (max_len {m.encoder.max_len})",
        *([f"  DDIM steps      {m.encoder.ddim_steps}"] if m.encoder.ddim_steps else []),
        f"  text encoder    {text}",
        f"  item fields     {', '.join(f'{f.name} ({f.kind})' for f in m.fields) or 'none'}",
        f"  current         {'yes' if not args.no_current else 'no'}",
    ]
    print("\n".join(lines))
    return 0


def add_events_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``events OUT --redis-url URL [--key-prefix P]``."""
    events = subparsers.add_parser(
        "events",
        help="write the service's event stream as a canonical interaction log (user_id,item_id,timestamp)",
        description="Reads the Redis stream <key-prefix>:events that POST /events appends to and writes it "
        "as a CSV the trainer reads (data.source format canonical); written to a temporary file, then renamed.",
    )
    events.add_argument("out", type=Path, metavar="OUT.csv")
    events.add_argument("--redis-url", required=True)
    events.add_argument("--key-prefix", default="recsys")
    events.set_defaults(func=_events)


def _events(args: argparse.Namespace) -> int:
    from exporter.events import dump_events

    count = dump_events(args.redis_url, args.key_prefix, args.out)
    print(f"wrote {count} events to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
