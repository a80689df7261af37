"""exporter.export end to end from real tiny runs: a verified artifact, immutability, atomic failure, the CLI."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch

from core.alphafuse import cold_start, fuse, load_basis
from core.artifact import ArtifactError, open_artifact, resolve_artifact
from exporter.cli import add_export_command
from exporter.export import MAX_PARITY_DIFF, export_run
from exporter.onnx_encoder import ort_session, parity_diffs
from training.items.embeddings import AlphaFuseEmbedding
from training.run.builder import Prepared
from training.run.checkpoint import load_run


@pytest.fixture(scope="module")
def alphafuse_root(alphafuse_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("artifacts")
    export_run(alphafuse_run, root)
    return root


def test_alphafuse_artifact_is_complete_and_verified(
    alphafuse_root: Path, alphafuse_run: Path
) -> None:
    path = resolve_artifact(alphafuse_root)  # via CURRENT
    manifest = open_artifact(path, verify=True)
    assert path.name == manifest.version
    assert manifest.version.endswith(manifest.files["items.npy"][:8])
    assert (manifest.model_kind, manifest.embedding_mode, manifest.num_items) == (
        "sasrec",
        "alphafuse",
        1682,
    )
    assert manifest.dims.model_dump() == {"d": 128, "d_s": 64, "d_n": 64, "d_l": 384}
    assert manifest.supports_text
    assert manifest.text_encoder is not None
    assert manifest.text_encoder.name == "sentence-transformers/all-MiniLM-L6-v2"
    assert manifest.encoder.max_len == 20
    assert manifest.encoder.parity_max_abs_diff <= 1e-5
    assert manifest.index.kind == "flat"
    assert manifest.index.recall_at_10 == 1.0
    assert manifest.training_config == json.loads((alphafuse_run / "config.json").read_text())
    assert set(manifest.metrics) == {"test", "dataset", "best_epoch"}
    assert sorted(manifest.files) == sorted(manifest.required_files())
    assert not [p for p in alphafuse_root.iterdir() if p.name.startswith(".")], "temp dir left"

    run = load_run(alphafuse_run)
    table = np.load(path / "items.npy", allow_pickle=False)
    np.testing.assert_array_equal(table, run.model.items.table().detach().numpy())
    assert json.loads((path / "item_ids.json").read_text()) == run.item_ids
    popularity = np.load(path / "popularity.npy", allow_pickle=False)
    np.testing.assert_array_equal(popularity, np.load(alphafuse_run / "popularity.npy"))


def test_artifact_encoder_reproduces_the_model_on_real_histories(
    alphafuse_root: Path, alphafuse_run: Path
) -> None:
    path = resolve_artifact(alphafuse_root)
    run = load_run(alphafuse_run)
    table = np.load(path / "items.npy", allow_pickle=False)
    rows = np.array([[0, 0, 0, 5, 17, 99], [3, 1, 4, 1, 5, 9]])  # (B, L) item rows
    mask = np.array([[False] * 3 + [True] * 3, [True] * 6])
    item_emb = table[rows] * mask[..., None]  # (B, L, d), as the service gathers it
    (user,) = ort_session(path / "encoder.onnx").run(None, {"item_emb": item_emb, "mask": mask})
    pad = run.model.num_items
    histories = torch.from_numpy(np.where(mask, rows, pad))  # (B, L), pad = N
    with torch.no_grad():
        expected = run.model.user_vectors(histories).numpy()  # (B, d)
    np.testing.assert_allclose(user, expected, atol=1e-5)


def test_parity_is_absolute_within_one_and_relative_above() -> None:
    """float32 rounding grows with the value: DreamRec's guided x0 has entries above 10 (an export of a d = 256
    beauty model differed from torch by 1.05e-5 at such an entry), SASRec's stay near 1."""
    expected = np.array([[0.5, -12.0, 3.0]], dtype=np.float32)
    rounding = expected + np.array([[0.0, -1.05e-5, 0.0]], dtype=np.float32)
    absolute, relative = parity_diffs(rounding, expected)
    assert absolute > MAX_PARITY_DIFF >= relative
    # at an entry below 1 the bound is absolute
    wrong = expected + np.array([[2e-5, 0.0, 0.0]], dtype=np.float32)
    assert parity_diffs(wrong, expected)[1] > MAX_PARITY_DIFF


def test_id_artifact_has_no_text_path_and_missing_popularity_is_zeros(
    id_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = tmp_path / "old-run"
    shutil.copytree(id_run, run_dir, ignore=shutil.ignore_patterns("popularity.npy", "plots"))
    root = tmp_path / "artifacts"
    with caplog.at_level(logging.WARNING):
        path = export_run(run_dir, root, index_kind="hnsw", version="id-v1", make_current=False)
    assert "popularity fallback is all zeros" in caplog.text
    manifest = open_artifact(path)
    assert manifest.text_encoder is None
    assert manifest.basis_file is None
    assert not manifest.supports_text
    assert not (path / "text_encoder").exists()
    assert manifest.dims.model_dump() == {"d": 128, "d_s": 128, "d_n": 0, "d_l": None}
    assert manifest.index.kind == "hnsw"
    assert manifest.index.recall_at_10 >= 0.99
    assert set(manifest.index.params) == {"M", "ef_construction", "ef_search"}
    assert not (root / "CURRENT").exists()
    assert not np.load(path / "popularity.npy").any()
    with pytest.raises(ValueError, match="already exists"):
        export_run(run_dir, root, version="id-v1")
    assert sorted(p.name for p in root.iterdir()) == ["id-v1"]


def test_tampered_file_is_refused(alphafuse_root: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(resolve_artifact(alphafuse_root), copy)
    open_artifact(copy)  # intact copy verifies
    data = bytearray((copy / "items.npy").read_bytes())
    data[-1] ^= 0x01
    (copy / "items.npy").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"items\.npy"):
        open_artifact(copy)


@pytest.mark.parametrize("fresh_root", [True, False])
def test_failure_mid_export_leaves_nothing_behind(
    id_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_root: bool
) -> None:
    root = tmp_path / "artifacts"
    if not fresh_root:
        root.mkdir()
        (root / "CURRENT").write_text("older\n")

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full while writing the index")

    monkeypatch.setattr(faiss, "write_index", broken)  # exporter.export calls faiss.write_index
    with pytest.raises(RuntimeError, match="disk full"):
        export_run(id_run, root, version="v1")
    if fresh_root:
        assert not root.exists()
    else:
        assert [p.name for p in root.iterdir()] == ["CURRENT"]
        assert (root / "CURRENT").read_text() == "older\n"


def test_cli_exports_and_prints_a_summary(
    id_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    add_export_command(parser.add_subparsers(required=True))
    root = tmp_path / "out"
    args = parser.parse_args(
        ["export", str(id_run), "--out", str(root), "--index", "flat", "--version", "cli-v1"]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert f"artifact: {root / 'cli-v1'}" in out
    assert "1682" in out
    assert "recall@10 1.0000" in out
    assert "parity" in out
    assert (root / "CURRENT").read_text().strip() == "cli-v1"


def test_semantic_query_is_exported_in_the_encoder_graph_and_served(
    alphafuse_run: Path, id_run: Path, tmp_path: Path
) -> None:
    from prometheus_client import CollectorRegistry

    from service.metrics import ServiceMetrics
    from service.runtime import ModelRuntime, Query
    from training.models.semantic_query import semantic_query_vectors

    path = export_run(alphafuse_run, tmp_path / "a", version="semq", semantic_query_beta=0.5)
    spec = open_artifact(path).encoder.semantic_query
    assert spec is not None
    assert (spec.beta, spec.last_n, spec.semantic_dim) == (0.5, 5, 64)
    run = load_run(alphafuse_run)
    table = np.load(path / "items.npy", allow_pickle=False)
    rows = np.array([[0, 0, 0, 5, 17, 99, 2, 8], [3, 1, 4, 1, 5, 9, 2, 6]])  # (B, L) item rows
    mask = np.array([[False] * 3 + [True] * 5, [True] * 8])
    histories = torch.from_numpy(np.where(mask, rows, run.model.num_items))  # (B, L), pad = N
    with torch.no_grad():
        expected = semantic_query_vectors(run.model, histories, 0.5).numpy()  # (B, d)
        plain = run.model.user_vectors(histories).numpy()
    item_emb = table[rows] * mask[..., None]  # (B, L, d), as the service gathers it
    (query,) = ort_session(path / "encoder.onnx").run(None, {"item_emb": item_emb, "mask": mask})
    np.testing.assert_allclose(query, expected, atol=1e-4)
    assert np.abs(query - plain).max() > 0.1  # the content term is really there
    runtime = ModelRuntime.load(path, threads=1, metrics=ServiceMetrics(CollectorRegistry()))
    try:
        for b in range(2):
            history = rows[b][mask[b]]
            (found, scores), *_ = runtime.recommend([Query(history, k=10, exclude=frozenset())])
            offline = table @ expected[b]  # (N,)
            np.testing.assert_allclose(scores, offline[found], rtol=1e-4, atol=1e-3)
            top = np.argsort(-offline, kind="stable")[:10]
            assert len(set(found.tolist()) & set(top.tolist())) >= 9
    finally:
        runtime.close()
    with pytest.raises(ValueError, match="needs an alphafuse model"):
        export_run(id_run, tmp_path / "b", semantic_query_beta=0.5)
    assert not (tmp_path / "b").exists()


def test_a_trained_language_map_is_folded_into_the_served_basis(
    language_map_run: Path, prepared: Prepared, tmp_path: Path
) -> None:
    """A new item is served as its text projected through the artifact's basis: with a language map that basis
    carries the map, so an item's row is exactly that projection plus its ID part, trained and new items alike."""
    path = export_run(language_map_run, tmp_path)
    run = load_run(language_map_run)
    items = run.model.items
    assert isinstance(items, AlphaFuseEmbedding)
    served = load_basis(path / "semantic_basis.npz")
    fitted = load_basis(language_map_run / "semantic_basis.npz")
    assert not np.allclose(served.projection, fitted.projection, atol=1e-4)  # the map trained
    table = np.load(path / "items.npy", allow_pickle=False)  # (N, d)
    ids = fuse(
        np.zeros_like(table), items.id_table().detach().numpy(), served
    )  # (N, d) ID parts alone
    assert prepared.text_embeddings is not None
    np.testing.assert_allclose(
        table - ids, cold_start(prepared.text_embeddings, served), rtol=1e-4, atol=1e-4
    )


def test_a_model_trained_with_its_semantic_query_is_served_with_it(
    trained_query_run: Path, tmp_path: Path
) -> None:
    """model.semantic_query_beta: the user vector is the semantic query in training, offline scoring and the
    exported graph alike; the manifest says so, and another beta at export is refused."""
    from training.models.semantic_query import SemanticQueryEncoder, semantic_query

    run = load_run(trained_query_run)
    encoder = run.model.encoder
    assert isinstance(encoder, SemanticQueryEncoder)
    assert (encoder.beta, encoder.semantic_dim) == (0.5, 64)
    histories = torch.tensor([[1682, 1682, 5, 17, 99], [3, 1, 4, 1, 5]])  # (B, L), pad = N = 1682
    mask = histories != 1682
    with torch.no_grad():
        rows = run.model.items(histories)
        plain = encoder.encoder.encode(rows, mask)
        expected = semantic_query(plain, rows, mask, 64, 0.5)
        torch.testing.assert_close(run.model.user_vectors(histories), expected)
    assert float((expected - plain).abs().max()) > 0.1  # the content term is really there
    path = export_run(trained_query_run, tmp_path / "a")  # checks the graph against torch
    spec = open_artifact(path, verify=True).encoder.semantic_query
    assert spec is not None
    assert (spec.beta, spec.semantic_dim) == (0.5, 64)
    with pytest.raises(ValueError, match="trained with its semantic query"):
        export_run(trained_query_run, tmp_path / "b", semantic_query_beta=1.0)
