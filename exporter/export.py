"""A finished training run -> one immutable artifact version (the contract: ``core.artifact``).

``export_run`` writes every file into ``<out_root>/.tmp-<version>-<random>/``: the item table and ids, popularity,
the semantic basis (AlphaFuse), the user encoder as ONNX (checked against torch on real item rows), the FAISS
index (recall measured on the user vectors of those histories), the text encoder (AlphaFuse only: the other
modes cannot place a new item from its text), the catalogue fields the service filters by (``exporter.items``).
Items the run held out of training (``held_out_items.json``, the
``cold_items`` protocol) are left out of the artifact: they were never trained, so they can only arrive the way any
new item does, through ``POST /items``. Then it hashes every file, writes ``manifest.json`` last, renames
the folder to ``<out_root>/<version>`` and points ``CURRENT`` at it. Any failure removes the temporary folder, so
``out_root`` only ever holds complete versions.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import logging
import re
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import faiss
import numpy as np
from numpy.typing import NDArray

from core.artifact import (
    MANIFEST_FILE,
    SCHEMA_VERSION,
    SEMANTIC_BASIS_FILE,
    Dims,
    EncoderSpec,
    IndexSpec,
    Manifest,
    SemanticQuerySpec,
    TextEncoderSpec,
    sha256_file,
    write_current,
    write_manifest,
)
from core.attributes import Column
from core.files import publish_dir
from core.histories import embed_histories
from exporter.index import IndexKind, build_index
from exporter.items import item_columns, write_items
from exporter.onnx_encoder import UserEncoder, encoder_outputs, export_user_encoder, parity_diffs
from exporter.text_encoder import export_text_encoder
from training.items.embeddings import alphafuse_with_null_space
from training.models.dreamrec import DreamRecEncoder
from training.models.semantic_query import SemanticQueryEncoder
from training.run.checkpoint import LoadedRun, load_run
from training.run.rundir import RunDir

__all__ = ["MAX_PARITY_DIFF", "export_run"]

logger = logging.getLogger(__name__)

MAX_PARITY_DIFF = 1e-5
PARITY_HISTORIES = 256
EXPORTABLE = ("sasrec", "dreamrec")  # model kinds with an artifact contract (one ONNX user encoder)
_VERSION = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")


def export_run(
    run_dir: Path,
    out_root: Path,
    *,
    index_kind: IndexKind = "auto",
    exact_threshold: int = 20_000,
    version: str | None = None,
    make_current: bool = True,
    semantic_query_beta: float = 0.0,
    ddim_steps: int | None = None,
    fields: list[str] | None = None,
) -> Path:
    """Export ``run_dir`` as ``out_root/<version>`` and return that path.

    Args:
        run_dir: a finished training run (``training.experiment.run_experiment``).
        out_root: the artifact root (created if needed); it also holds ``CURRENT``.
        index_kind: ``auto`` (exact below ``exact_threshold`` items, else ``pq``; see ``exporter.index``),
            ``flat``, ``pq``, ``hnsw`` or ``ivf``.
        exact_threshold: catalogue size from which ``auto`` builds an approximate index.
        version: the version name; default ``YYYYMMDDTHHMMSSZ-<first 8 hex of items.npy's sha256>``.
        make_current: point ``out_root/CURRENT`` at the new version.
        semantic_query_beta: > 0 folds the semantic query (``training.models.semantic_query``) with this ``beta`` into
            the user encoder graph (AlphaFuse only): every user vector gains a content term from the language
            coordinates of the last history items, which lifts items added from their text.
        ddim_steps: DreamRec only: unroll the guided DDIM sampler with this many denoiser calls instead of the
            training config's ``diffusion.steps`` (the sampler has no trained weights, so the serving step count
            is chosen at export; ``benchmarks/dreamrec_steps.py`` measures quality and latency per count).
        fields: catalogue fields kept as item attributes for the service's filters (``core.attributes``); None:
            every field of the dataset's catalogue but free text; ``[]``: none.

    Raises:
        ValueError: the version exists or is not a plain name, the run is incomplete, the model kind is not
            exportable, or the ONNX encoder differs from torch by more than ``MAX_PARITY_DIFF`` (relative
            to the value's size where that exceeds 1), or
            ``semantic_query_beta`` is negative or set for a model without AlphaFuse's language coordinates,
            or ``ddim_steps`` is set for a model without a sampler or outside [1, diffusion.timesteps].
    """
    run = load_run(run_dir, device="cpu")
    _set_ddim_steps(run, ddim_steps)
    user = _user_encoder(run, semantic_query_beta)  # (graph to export, semantic query spec)
    run, table = _item_table(run, run_dir)  # (N, d), held-out rows left out
    items_npy = _npy_bytes(table)
    final = _version_dir(out_root, version or _default_version(items_npy))
    index, columns = (index_kind, exact_threshold), item_columns(run, fields)
    write = functools.partial(_write, run, run_dir, table, items_npy, final.name, index, user)
    _publish(final, functools.partial(write, columns))
    if make_current:
        _make_current(final)
    logger.info("artifact %s written to %s%s", final.name, final, " (CURRENT)" * make_current)
    return final


def _item_table(run: LoadedRun, run_dir: Path) -> tuple[LoadedRun, NDArray[np.float32]]:
    """The (N, d) float32 item table to serve and the run without its held-out items (``_drop_held_out``)."""
    if (
        run.config.model.name not in EXPORTABLE
    ):  # LLM-ESR: an offline baseline, no artifact contract
        raise ValueError(
            f"{run_dir}: model {run.config.model.name!r} cannot be exported "
            f"(exportable: {', '.join(EXPORTABLE)})"
        )
    table = np.ascontiguousarray(run.model.items.table().detach().numpy(), dtype=np.float32)
    return _drop_held_out(run, run_dir, table)


def _version_dir(out_root: Path, version: str) -> Path:
    """``out_root/version``, which must be a plain name and must not exist yet."""
    if not _VERSION.match(version):
        raise ValueError(
            f"version {version!r} must be letters, digits, '.', '_' or '-', not starting with '.'"
        )
    final = out_root / version
    if final.exists():
        raise ValueError(f"{final} already exists; artifact versions are immutable")
    return final


def _publish(final: Path, write: Callable[[Path], object]) -> None:
    """``write`` the artifact into a staged folder and rename it to ``final`` (``core.files.publish_dir``).

    The root is created if needed; a failed export removes what it made, the root too if it created it.
    """
    root = final.parent
    created_root = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    try:
        publish_dir(final, write)
    except BaseException as exc:
        if created_root and not any(root.iterdir()):
            root.rmdir()
        if isinstance(exc, FileExistsError) and final.exists():
            raise ValueError(f"{exc}; artifact versions are immutable") from exc
        raise


def _make_current(final: Path) -> None:
    """Point ``CURRENT`` at ``final``; if that fails, the new version goes too (nothing half-published)."""
    try:
        write_current(final.parent, final.name)
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise


def _write(
    run: LoadedRun,
    run_dir: Path,
    table: NDArray[np.float32],
    items_npy: bytes,
    version: str,
    index_options: tuple[IndexKind, int],
    user: tuple[UserEncoder, SemanticQuerySpec | None],
    columns: dict[str, Column],
    out: Path,
) -> Manifest:
    """Every file of the artifact into the staged folder ``out``, the manifest last.

    ``index_options``: (kind, exact threshold) for ``build_index``; ``user``: the encoder graph, its semantic query;
    ``columns``: the item attributes to keep (``item_columns``).
    """
    (index_kind, exact_threshold), (user_encoder, semantic) = index_options, user
    config, basis, files = run.config, run.basis, RunDir(run_dir)
    mode = config.embedding.mode
    fields = write_items(run, run_dir, items_npy, columns, out)
    sampler = run.model.encoder
    encoder = EncoderSpec(
        max_len=config.data.max_len,
        parity_max_abs_diff=0.0,
        semantic_query=semantic,
        ddim_steps=sampler.steps if isinstance(sampler, DreamRecEncoder) else None,
    )
    export_user_encoder(user_encoder, out / encoder.file)
    parity, users = _check_encoder(user_encoder, config.data.max_len, out / encoder.file, table)
    encoder = encoder.model_copy(update={"parity_max_abs_diff": parity})
    index, index_spec = build_index(
        table, kind=index_kind, exact_threshold=exact_threshold, queries=users
    )
    faiss.write_index(index, str(out / index_spec.file))
    text = export_text_encoder(config.text, out) if mode == "alphafuse" else None
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        version=version,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        model_kind=config.model.name,
        embedding_mode=mode,
        dims=_dims(run, table.shape[1], text),
        num_items=len(run.item_ids),
        encoder=encoder,
        index=index_spec,
        text_encoder=text,
        basis_file=SEMANTIC_BASIS_FILE if basis is not None else None,
        fields=fields,
        training_config=json.loads(files.config.read_text()),
        metrics=_metrics(files.metrics),
        files=_checksums(out),
    )
    write_manifest(out, manifest)
    _log_summary(manifest, index_spec)
    return manifest


def _set_ddim_steps(run: LoadedRun, steps: int | None) -> None:
    """Serve DreamRec's deterministic DDIM sampler with ``steps`` denoiser calls (None: the config's)."""
    if steps is None:
        return
    encoder = run.model.encoder
    if not isinstance(encoder, DreamRecEncoder):
        raise ValueError(
            f"ddim_steps={steps} applies to DreamRec's sampler; this run's model is {run.config.model.name!r}"
        )
    timesteps = encoder.config.diffusion.timesteps
    if not 1 <= steps <= timesteps:
        raise ValueError(f"ddim_steps must be in [1, diffusion.timesteps={timesteps}], got {steps}")
    encoder.sampler, encoder.steps = "ddim", steps


def _user_encoder(run: LoadedRun, beta: float) -> tuple[UserEncoder, SemanticQuerySpec | None]:
    """The encoder the graph is exported from: the model's own, or wrapped in the semantic query."""
    encoder = cast(
        UserEncoder, run.model.encoder
    )  # SASRec, DreamRec's sampler, or SASRec with its query
    if isinstance(encoder, SemanticQueryEncoder):  # trained with its query: served as trained
        if beta not in (0, encoder.beta):
            raise ValueError(
                f"this model was trained with its semantic query (beta {encoder.beta}); it is served with that "
                f"beta, got semantic_query_beta={beta}"
            )
        spec = SemanticQuerySpec(
            beta=encoder.beta, last_n=encoder.last_n, semantic_dim=encoder.semantic_dim
        )
        return encoder, spec
    if beta == 0:
        return encoder, None
    mode = run.config.embedding.mode
    items = alphafuse_with_null_space(
        run.model.items, f"semantic_query_beta (embedding mode {mode!r})"
    )
    query = SemanticQueryEncoder(encoder, items.semantic_dim, beta)  # raises for beta < 0
    spec = SemanticQuerySpec(beta=beta, last_n=query.last_n, semantic_dim=query.semantic_dim)
    return query, spec


def _check_encoder(
    encoder: UserEncoder, max_len: int, onnx_path: Path, table: NDArray[np.float32]
) -> tuple[float, NDArray[np.float32]]:
    """ONNX vs torch on random histories of real item rows (full length and a shorter L).

    Each entry of the ONNX user vectors must be within ``MAX_PARITY_DIFF`` of torch's, times the entry's size
    where that exceeds 1: float32 rounding grows with the values, and DreamRec's guided x0 has entries above 10
    where SASRec's LayerNorm-sized ones stay near 1.

    Returns:
        (the largest absolute difference, torch's (H, d) user vectors of the full-length histories).
    """
    item_emb, mask = _histories(table, max_len, PARITY_HISTORIES)
    short = max(1, (item_emb.shape[1] + 1) // 2)
    batches = [
        (item_emb, mask),
        (np.ascontiguousarray(item_emb[:, -short:]), np.ascontiguousarray(mask[:, -short:])),
    ]
    outputs = [encoder_outputs(encoder, onnx_path, e, m) for e, m in batches]
    parity, relative = np.max([parity_diffs(got, expected) for got, expected in outputs], axis=0)
    if not relative <= MAX_PARITY_DIFF:
        raise ValueError(
            f"ONNX user encoder differs from torch by {relative:.3g} > {MAX_PARITY_DIFF} (relative to entries "
            f"above 1; {parity:.3g} absolute) on real histories"
        )
    return float(parity), outputs[0][1]


def _histories(
    table: NDArray[np.float32], max_len: int, count: int, seed: int = 0
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """(H, L, d) embedded random histories of real rows with random lengths, left-padded; (H, L) mask."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, max_len + 1, size=count)  # (H,)
    rows = rng.integers(0, len(table), size=(count, max_len))  # (H, L)
    histories = [rows[h, max_len - n :] for h, n in enumerate(lengths.tolist())]
    return embed_histories(table, histories, max_len)  # zero at padding, as the service sends it


def _drop_held_out(
    run: LoadedRun, run_dir: Path, table: NDArray[np.float32]
) -> tuple[LoadedRun, NDArray[np.float32]]:
    """Without the rows listed in ``run_dir/held_out_items.json`` (if any): the run's ids, popularity, table."""
    files = RunDir(run_dir)
    path = files.held_out
    if not path.is_file():
        return run, table
    held_out = files.read_json(path)
    if not isinstance(held_out, list) or not all(isinstance(i, str) for i in held_out):
        raise ValueError(f"{path}: expected a JSON list of item id strings")
    unknown = sorted(set(held_out) - set(run.item_ids))
    if unknown:
        raise ValueError(f"{path}: {len(unknown)} ids not in item_ids.json, e.g. {unknown[:5]}")
    drop = set(held_out)
    keep = np.array([i not in drop for i in run.item_ids], dtype=bool)  # (N,)
    if not keep.any():
        raise ValueError(f"{path}: every item is held out; nothing to export")
    popularity = None if run.popularity is None else run.popularity[keep]
    kept_ids = [i for i, k in zip(run.item_ids, keep.tolist(), strict=True) if k]
    logger.info(
        "%s: leaving %d held-out items out of the artifact (%d kept)",
        run_dir,
        len(drop),
        len(kept_ids),
    )
    run = dataclasses.replace(run, item_ids=kept_ids, popularity=popularity)
    return run, np.ascontiguousarray(table[keep])


def _dims(run: LoadedRun, d: int, text: TextEncoderSpec | None) -> Dims:
    basis = run.basis
    d_n = 0 if basis is None else basis.null_dim
    d_l = basis.input_dim if basis is not None else None
    if text is not None and d_l is not None and text.dim != d_l:
        raise ValueError(
            f"text encoder {text.name} outputs d_l={text.dim}, the semantic basis expects {d_l}"
        )
    return Dims(d=d, d_s=d - d_n, d_n=d_n, d_l=d_l)


def _metrics(path: Path) -> dict[str, Any]:
    if not path.is_file():
        logger.warning("%s missing: the manifest carries no offline metrics", path)
        return {}
    metrics = json.loads(path.read_text())
    return {key: metrics[key] for key in ("test", "dataset", "best_epoch") if key in metrics}


def _checksums(out: Path) -> dict[str, str]:
    return {
        path.relative_to(out).as_posix(): sha256_file(path)
        for path in sorted(out.rglob("*"))
        if path.is_file() and path.name != MANIFEST_FILE
    }


def _npy_bytes(array: NDArray[np.float32]) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _default_version(items_npy: bytes) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{hashlib.sha256(items_npy).hexdigest()[:8]}"


def _log_summary(manifest: Manifest, index: IndexSpec) -> None:
    logger.info(
        "artifact %s: %d items, mode %s, d=%d (d_n=%d), index %s %s recall@10 %.4f, encoder parity %.2e, "
        "text encoder %s",
        manifest.version,
        manifest.num_items,
        manifest.embedding_mode,
        manifest.dims.d,
        manifest.dims.d_n,
        index.kind,
        index.params,
        index.recall_at_10,
        manifest.encoder.parity_max_abs_diff,
        manifest.text_encoder.name if manifest.text_encoder else "none",
    )
