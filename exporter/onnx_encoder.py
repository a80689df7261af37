"""The SASRec user encoder as an ONNX graph, and its parity against torch.

The graph takes ``item_emb`` (B, L, d) float32 and ``mask`` (B, L) bool (left-padded, most recent item at L-1)
and returns ``user`` (B, d), with dynamic batch and length axes (1 <= L <= max_len): the service gathers the
embeddings from its item table itself, so items added after training can appear in a history.

Export uses the TorchScript exporter (``dynamo=False``, opset 17), whose ``dynamic_axes`` keep the position slice
``positions.weight[L - T:]`` symbolic.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from numpy.typing import NDArray
from torch import nn
from torch.jit._trace import TracerWarning

from training.models.dreamrec import DreamRecEncoder
from training.models.sasrec import SASRec
from training.models.semantic_query import SemanticQueryEncoder

UserEncoder = SASRec | DreamRecEncoder | SemanticQueryEncoder

__all__ = [
    "INPUT_NAMES",
    "OPSET",
    "OUTPUT_NAME",
    "UserEncoder",
    "encoder_outputs",
    "encoder_parity",
    "export_user_encoder",
    "ignore_export_warnings",
    "ort_session",
    "parity_diffs",
]

logger = logging.getLogger(__name__)

INPUT_NAMES = ("item_emb", "mask")
OUTPUT_NAME = "user"
OPSET = 17


class _UserEncoder(nn.Module):
    """``encode`` (SASRec's, or DreamRec's whole guided DDIM sampler) as a module with positional inputs,
    which is what the exporter traces."""

    def __init__(self, encoder: UserEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, item_emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.encoder.encode(item_emb, mask)  # (B, L, d), (B, L) -> (B, d)


def export_user_encoder(encoder: UserEncoder, path: Path) -> None:
    """Write ``encoder`` as ONNX to ``path`` (eval mode; the module's training flag is restored).

    A DreamRec encoder is traced with its DDIM sampler unrolled: ``steps`` guided denoiser calls from its fixed
    initial point, one graph with the same inputs and output as SASRec's.

    Raises:
        ValueError: the encoder's parameters are not all on the CPU, or a DreamRec encoder does not use the
            deterministic DDIM sampler.
    """
    inner = encoder.encoder if isinstance(encoder, SemanticQueryEncoder) else encoder
    if isinstance(inner, DreamRecEncoder) and inner.sampler != "ddim":
        raise ValueError(
            f"only the deterministic DDIM sampler is exported, the encoder uses {inner.sampler!r}"
        )
    devices = {p.device.type for p in encoder.parameters()}
    if devices != {"cpu"}:
        raise ValueError(f"export the encoder from the CPU, its parameters are on {devices}")
    cfg = encoder.config
    length = cfg.max_len - 1 if cfg.max_len > 2 else cfg.max_len  # a trace shape unlike any bound
    item_emb = torch.randn(2, length, cfg.dim)  # (B, L, d)
    mask = torch.ones(2, length, dtype=torch.bool)  # (B, L)
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            ignore_export_warnings()
            torch.onnx.export(
                _UserEncoder(encoder),
                (item_emb, mask),
                str(path),
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                dynamic_axes={
                    "item_emb": {0: "batch", 1: "length"},
                    "mask": {0: "batch", 1: "length"},
                    OUTPUT_NAME: {0: "batch"},
                },
                opset_version=OPSET,
                dynamo=False,
            )
    finally:
        encoder.train(was_training)
    onnx.checker.check_model(onnx.load(str(path)))
    logger.info("exported the user encoder (d=%d, max_len=%d) to %s", cfg.dim, cfg.max_len, path)


def ort_session(path: Path, threads: int = 1) -> ort.InferenceSession:
    """A CPU ONNX Runtime session with ``threads`` intra-op threads (1: deterministic, like the service)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def encoder_parity(
    model: UserEncoder,
    onnx_path: Path,
    item_emb: NDArray[np.float32],
    mask: NDArray[np.bool_],
) -> float:
    """Max absolute difference between the ONNX graph and ``model.encode`` on one batch (``encoder_outputs``)."""
    return parity_diffs(*encoder_outputs(model, onnx_path, item_emb, mask))[0]


def parity_diffs(got: NDArray[np.float32], expected: NDArray[np.float32]) -> tuple[float, float]:
    """(largest |got - expected|, largest |got - expected| / max(1, |expected|)) over all entries."""
    diff = np.abs(got - expected)
    return float(diff.max()), float((diff / np.maximum(1.0, np.abs(expected))).max())


def encoder_outputs(
    model: UserEncoder,
    onnx_path: Path,
    item_emb: NDArray[np.float32],
    mask: NDArray[np.bool_],
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The user vectors of the ONNX graph and of ``model.encode`` (eval mode) on one batch, (B, d) each.

    Args:
        model: the torch encoder the graph was exported from.
        onnx_path: the exported graph.
        item_emb: (B, L, d) float32 embedded histories, zero at padding.
        mask: (B, L) bool, True at real items, left-padded (every row real at L-1).
    """
    if item_emb.ndim != 3 or mask.shape != item_emb.shape[:2]:
        raise ValueError(
            f"need item_emb (B, L, d) and mask (B, L), got {item_emb.shape}, {mask.shape}"
        )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected = model.encode(torch.from_numpy(item_emb), torch.from_numpy(mask))  # (B, d)
    finally:
        model.train(was_training)
    (got,) = ort_session(onnx_path).run(None, {"item_emb": item_emb, "mask": mask})  # (B, d)
    return np.asarray(got, dtype=np.float32), expected.numpy()


def ignore_export_warnings() -> None:
    """The legacy exporter warns that it is legacy, and the tracer about the encoder's shape checks (the
    ``T > L`` guard and the two-way k/v split, both constant for valid inputs)."""
    warnings.filterwarnings("ignore", "You are using the legacy TorchScript", DeprecationWarning)
    warnings.filterwarnings("ignore", category=TracerWarning)
