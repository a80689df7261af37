"""The artifact's text encoder at serving time: ``tokenizers`` + ONNX Runtime, no torch.

``OnnxTextEncoder`` turns item texts into the language embeddings (B, d_l) that training computed with
sentence-transformers (the exporter checked the two agree): tokenize with the artifact's ``tokenizer.json``,
truncating at ``spec.max_length`` and padding to the longest text of the batch, then run ``model.onnx``, whose
graph already holds the pooling and any normalisation. Large batches run in chunks of texts of similar length, so
one long text does not make every other text pay for its padding.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from tokenizers import Tokenizer

from core.artifact import TextEncoderSpec

__all__ = ["OnnxTextEncoder"]

logger = logging.getLogger(__name__)


class OnnxTextEncoder:
    """Embed texts with an artifact's exported text encoder.

    Example:
        >>> encoder = OnnxTextEncoder(artifact_dir, manifest.text_encoder)  # doctest: +SKIP
        >>> encoder.encode(["red lipstick", "nail polish"]).shape  # doctest: +SKIP
        (2, 384)
    """

    def __init__(
        self, artifact_dir: Path, spec: TextEncoderSpec, threads: int = 1, batch_size: int = 32
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        folder = artifact_dir / spec.directory
        self.spec, self.batch_size = spec, batch_size
        self.tokenizer = Tokenizer.from_file(str(folder / spec.tokenizer_file))
        self.tokenizer.enable_truncation(spec.max_length)
        padding = self.tokenizer.padding or {}
        self.tokenizer.enable_padding(  # to the longest text of each batch, whatever the file says
            direction=padding.get("direction", "right"),
            pad_id=padding.get("pad_id", 0),
            pad_type_id=padding.get("pad_type_id", 0),
            pad_token=padding.get("pad_token", "[PAD]"),
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(folder / spec.onnx_file), options, providers=["CPUExecutionProvider"]
        )
        inputs = tuple(i.name for i in self.session.get_inputs())
        outputs = [o.name for o in self.session.get_outputs()]
        if set(inputs) != set(spec.inputs) or spec.output not in outputs:
            raise ValueError(
                f"{folder / spec.onnx_file}: graph inputs {inputs} / outputs {outputs} do not match "
                f"the manifest's {spec.inputs} / {spec.output!r}"
            )
        logger.info("text encoder %s loaded from %s (d_l=%d)", spec.name, folder, spec.dim)

    @property
    def dim(self) -> int:
        """d_l, the embedding width."""
        return self.spec.dim

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """(B,) texts -> (B, d_l) float32 embeddings; an empty list gives (0, d_l).

        Raises:
            TypeError: ``texts`` is a single string, or holds something other than strings.
        """
        if isinstance(texts, str):
            raise TypeError("encode takes a sequence of texts, got one str")
        if not texts:
            return np.zeros((0, self.spec.dim), dtype=np.float32)
        values: Sequence[object] = texts
        bad = [type(t).__name__ for t in values if not isinstance(t, str)]
        if bad:
            raise TypeError(f"texts must all be str, got {len(bad)} others: {sorted(set(bad))}")
        if len(texts) <= self.batch_size:
            return self._run(list(texts))
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths pad little
        out = np.empty((len(texts), self.spec.dim), dtype=np.float32)  # (B, d_l)
        for start in range(0, len(texts), self.batch_size):
            rows = order[start : start + self.batch_size]
            out[rows] = self._run([texts[i] for i in rows])
        return out

    def _run(self, texts: list[str]) -> NDArray[np.float32]:
        encodings = self.tokenizer.encode_batch(texts)
        columns = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        feeds = {name: np.asarray(columns[name], dtype=np.int64) for name in self.spec.inputs}
        (embedding,) = self.session.run([self.spec.output], feeds)  # (B, T) each -> (B, d_l)
        return np.ascontiguousarray(embedding, dtype=np.float32)
