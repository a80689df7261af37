"""service.text_encoder: the exported ONNX text encoder embeds real item texts as sentence-transformers does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.artifact import TextEncoderSpec
from exporter.text_encoder import export_text_encoder
from service.text_encoder import OnnxTextEncoder
from training.config import load_config
from training.data.readers import load_dataset
from training.items.text_embeddings import TextEmbeddingConfig, embed_item_texts

BEAUTY = Path(__file__).resolve().parents[2] / "training" / "configs" / "amazon14-beauty.toml"


@pytest.fixture(scope="module")
def beauty_texts(shared_data: Path) -> list[str]:
    folder = shared_data / "amazon14-beauty"
    config = load_config(
        BEAUTY,
        [f'data.source.path="{folder}"', f'data.source.items_path="{folder / "items.jsonl"}"'],
    )
    texts = load_dataset(config.data.source).item_texts
    picks = np.linspace(0, len(texts) - 1, 200).astype(int)  # 200 items across the catalogue
    return [texts[i] for i in picks]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TextEncoderSpec]:
    out = tmp_path_factory.mktemp("artifact")
    spec = export_text_encoder(TextEmbeddingConfig(), out)
    assert spec is not None
    return out, spec


def test_spec_describes_the_bundled_model(exported: tuple[Path, TextEncoderSpec]) -> None:
    out, spec = exported
    assert spec.name == "sentence-transformers/all-MiniLM-L6-v2"
    assert spec.inputs == ("input_ids", "attention_mask", "token_type_ids")
    assert (spec.max_length, spec.dim, spec.output) == (256, 384, "embedding")
    assert (out / "text_encoder" / "model.onnx").is_file()
    assert (out / "text_encoder" / "tokenizer.json").is_file()


def test_onnx_matches_sentence_transformers_on_real_item_texts(
    exported: tuple[Path, TextEncoderSpec], beauty_texts: list[str], tmp_path: Path
) -> None:
    config = TextEmbeddingConfig(cache_dir=tmp_path, batch_size=32)
    expected = embed_item_texts(beauty_texts, config)  # (200, 384)
    got = OnnxTextEncoder(*exported).encode(beauty_texts)  # (200, 384)
    assert got.shape == expected.shape == (200, 384)
    assert got.dtype == np.float32
    cosine = (
        (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    )
    assert cosine.min() >= 0.9999, np.argsort(cosine)[:5]
    # texts are told apart: each embedding is nearest to its own reference
    assert (np.argmax(got @ expected.T, axis=1) == np.arange(len(beauty_texts))).mean() > 0.95


def test_long_texts_are_truncated_like_sentence_transformers(
    exported: tuple[Path, TextEncoderSpec], beauty_texts: list[str], tmp_path: Path
) -> None:
    long_text = " ".join(beauty_texts[:60])  # far past 256 tokens
    expected = embed_item_texts([long_text], TextEmbeddingConfig(cache_dir=tmp_path))[0]
    got = OnnxTextEncoder(*exported).encode([long_text])[0]
    assert float(got @ expected / np.linalg.norm(got) / np.linalg.norm(expected)) >= 0.9999
    # the tail past the limit is cut: appending more text does not change the embedding
    longer = OnnxTextEncoder(*exported).encode([long_text + " extra words at the very end"])[0]
    np.testing.assert_allclose(longer, got, atol=1e-6)


def test_batches_pad_to_their_longest_text(exported: tuple[Path, TextEncoderSpec]) -> None:
    encoder = OnnxTextEncoder(*exported)
    alone = encoder.encode(["red lipstick"])
    together = encoder.encode(["red lipstick", "a much longer description of a nail polish set"])
    np.testing.assert_allclose(alone[0], together[0], atol=1e-5)


def test_empty_and_invalid_inputs(exported: tuple[Path, TextEncoderSpec]) -> None:
    encoder = OnnxTextEncoder(*exported)
    assert encoder.encode([]).shape == (0, 384)
    with pytest.raises(TypeError, match="one str"):
        encoder.encode("red lipstick")
    with pytest.raises(TypeError, match="int"):
        encoder.encode(["ok", 3])  # type: ignore[list-item]


def test_precomputed_vectors_have_no_text_encoder(tmp_path: Path) -> None:
    config = TextEmbeddingConfig(npy_path=tmp_path / "vectors.npy")
    assert export_text_encoder(config, tmp_path) is None
    assert not (tmp_path / "text_encoder").exists()
