"""The artifact contract between the exporter and the service.

An artifact is one immutable directory per model version::

    <root>/<version>/
        manifest.json          Manifest below: dims, files and their sha256, metrics, config
        encoder.onnx           (B, L, d) item embeddings + (B, L) mask -> (B, d) user vectors
        items.npy              (N, d) float32 fused item table, row i = item_ids[i]
        items.faiss            inner-product index over items.npy (exact or HNSW/IVF)
        item_ids.json          external item ids, row order
        popularity.npy         (N,) int64 training interaction counts (fallback for empty histories)
        semantic_basis.npz     AlphaFuse basis: text embedding -> row-space coordinates (text modes only)
        text_encoder/          model.onnx + tokenizer.json (text modes only)
        fields/                item attributes for filters: <name>.npy (+ <name>.vocab.json), ``core.attributes``
    <root>/CURRENT             the version the service loads by default (written atomically)

Exporter writes a manifest with ``write_manifest`` after every other file; the service calls ``open_artifact``,
which refuses a directory whose schema, file list or checksums do not match.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.attributes import FieldSpec
from core.files import atomic_write

__all__ = [
    "CURRENT_FILE",
    "ITEMS_FILE",
    "ITEM_IDS_FILE",
    "MANIFEST_FILE",
    "POPULARITY_FILE",
    "SCHEMA_VERSION",
    "SEMANTIC_BASIS_FILE",
    "ArtifactError",
    "Dims",
    "EncoderSpec",
    "IndexSpec",
    "Manifest",
    "SemanticQuerySpec",
    "TextEncoderSpec",
    "open_artifact",
    "resolve_artifact",
    "sha256_file",
    "write_current",
    "write_manifest",
]

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
CURRENT_FILE = "CURRENT"
# the file names a manifest gives by default (the exporter writes them; the service reads the manifest's fields)
ITEMS_FILE = "items.npy"
ITEM_IDS_FILE = "item_ids.json"
POPULARITY_FILE = "popularity.npy"
SEMANTIC_BASIS_FILE = "semantic_basis.npz"


class ArtifactError(ValueError):
    """An artifact directory that is missing, incomplete, corrupted or of an unknown schema."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Dims(_Frozen):
    """d = d_s + d_n fused dimensions; d_l the language (text encoder) dimension, None without text."""

    d: int = Field(gt=0)
    d_s: int = Field(ge=0)
    d_n: int = Field(ge=0)
    d_l: int | None = Field(default=None, gt=0)


class SemanticQuerySpec(_Frozen):
    """The content term folded into the encoder graph: ``q = u + beta * s * [m_s ; 0]``, ``m_s`` the mean of the
    first ``semantic_dim`` coordinates of the last ``last_n`` history rows (``training.models.semantic_query``)."""

    beta: float = Field(gt=0)
    last_n: int = Field(gt=0)
    semantic_dim: int = Field(gt=0)


class EncoderSpec(_Frozen):
    """The user encoder graph: inputs ``item_emb`` (B, L, d) float32 and ``mask`` (B, L) bool, True at real
    items, left-padded so the most recent item is at L-1; output ``user`` (B, d) float32 (the semantic query
    when ``semantic_query`` is set)."""

    file: str = "encoder.onnx"
    max_len: int = Field(gt=0)
    inputs: tuple[str, str] = ("item_emb", "mask")
    output: str = "user"
    parity_max_abs_diff: float = Field(
        ge=0, description="ONNX vs torch on real histories at export"
    )
    semantic_query: SemanticQuerySpec | None = None
    ddim_steps: int | None = Field(
        default=None,
        gt=0,
        description="DreamRec: denoiser calls of the DDIM sampler unrolled in the graph",
    )


class IndexSpec(_Frozen):
    """FAISS inner-product index over the item table."""

    file: str = "items.faiss"
    kind: Literal["flat", "pq", "hnsw", "ivf"]
    params: dict[str, int] = Field(
        default_factory=dict, description="M, ef_search, nlist, nprobe, pq_m, k_factor_rf"
    )
    recall_at_10: float = Field(ge=0, le=1, description="vs exact search, measured at export")

    def search_params(self) -> dict[str, int]:
        """The search-time knobs as ``faiss.ParameterSpace`` names; ``faiss.read_index`` keeps none of them."""
        names = {"ef_search": "efSearch", "nprobe": "nprobe", "k_factor_rf": "k_factor_rf"}
        return {names[k]: v for k, v in self.params.items() if k in names}


class TextEncoderSpec(_Frozen):
    """The text encoder as ONNX: inputs ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when listed),
    int64 (B, T); output ``embedding`` (B, d_l) float32, pooling and normalisation inside the graph."""

    name: str = Field(
        description="the sentence-transformers model the training embeddings came from"
    )
    directory: str = "text_encoder"
    onnx_file: str = "model.onnx"
    tokenizer_file: str = "tokenizer.json"
    inputs: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")
    output: str = "embedding"
    max_length: int = Field(gt=0, description="tokens kept per text (truncation)")
    dim: int = Field(gt=0)


class Manifest(_Frozen):
    schema_version: int
    version: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    created: str
    model_kind: Literal["sasrec", "dreamrec"]
    embedding_mode: Literal["id", "llminit", "alphafuse"]
    dims: Dims
    num_items: int = Field(gt=0)
    encoder: EncoderSpec
    index: IndexSpec
    text_encoder: TextEncoderSpec | None = None
    items_file: str = ITEMS_FILE
    item_ids_file: str = ITEM_IDS_FILE
    popularity_file: str = POPULARITY_FILE
    basis_file: str | None = SEMANTIC_BASIS_FILE
    training_config: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    fields: tuple[FieldSpec, ...] = Field(
        default=(), description="item attributes the service filters by; none in older artifacts"
    )
    files: dict[str, str] = Field(description="relative path -> sha256 of every other file")

    @property
    def supports_text(self) -> bool:
        """Whether new items can be embedded from text (a text encoder and a semantic basis are present)."""
        return self.text_encoder is not None and self.basis_file is not None

    def required_files(self) -> list[str]:
        files = [self.encoder.file, self.index.file, self.items_file, self.item_ids_file]
        files.append(self.popularity_file)
        if self.basis_file is not None:
            files.append(self.basis_file)
        if self.text_encoder is not None:
            te = self.text_encoder
            files += [f"{te.directory}/{te.onnx_file}", f"{te.directory}/{te.tokenizer_file}"]
        for spec in self.fields:
            files += [spec.file] + ([spec.vocabulary_file] if spec.vocabulary_file else [])
        return files


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Write ``manifest.json`` (atomically) after checking that every listed file matches its checksum."""
    _verify_files(directory, manifest)
    _atomic_write_text(directory / MANIFEST_FILE, manifest.model_dump_json(indent=2) + "\n")


def open_artifact(directory: Path, *, verify: bool = True) -> Manifest:
    """Load and validate ``directory/manifest.json``; with ``verify`` also check every file's sha256.

    Raises:
        ArtifactError: naming the directory and what is wrong.
    """
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise ArtifactError(
            f"{directory}: no {MANIFEST_FILE} (not an artifact, or an unfinished export)"
        )
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable manifest: {exc}") from exc
    found = raw.get("schema_version") if isinstance(raw, dict) else None
    if found != SCHEMA_VERSION:
        raise ArtifactError(f"{path}: schema_version {found!r}, this build reads {SCHEMA_VERSION}")
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        raise ArtifactError(f"{path}: invalid manifest: {exc}") from exc
    if verify:
        _verify_files(directory, manifest)
    return manifest


def resolve_artifact(path: Path) -> Path:
    """An artifact directory itself, or a root whose ``CURRENT`` file names one of its versions."""
    if (path / MANIFEST_FILE).is_file():
        return path
    current = path / CURRENT_FILE
    if current.is_file():
        version = current.read_text().strip()
        if not version or "/" in version or version.startswith("."):
            raise ArtifactError(f"{current}: invalid version {version!r}")
        return path / version
    raise ArtifactError(
        f"{path}: neither an artifact ({MANIFEST_FILE}) nor a root with {CURRENT_FILE}"
    )


def write_current(root: Path, version: str) -> None:
    """Point ``root/CURRENT`` at ``version`` (atomic rename)."""
    if not (root / version / MANIFEST_FILE).is_file():
        raise ArtifactError(f"{root / version}: not a complete artifact")
    _atomic_write_text(root / CURRENT_FILE, version + "\n")


def _verify_files(directory: Path, manifest: Manifest) -> None:
    missing = [f for f in manifest.required_files() if f not in manifest.files]
    if missing:
        raise ArtifactError(f"{directory}: manifest lists no checksum for {missing}")
    root = directory.resolve()
    for name, expected in sorted(manifest.files.items()):
        file = directory / name
        if ".." in Path(name).parts or Path(name).is_absolute():
            raise ArtifactError(f"{directory}: file name {name!r} escapes the artifact")
        if not file.resolve().is_relative_to(root):  # a symbolic link out of the directory
            raise ArtifactError(f"{directory}: file {name!r} links outside the artifact")
        if not file.is_file():
            raise ArtifactError(f"{directory}: missing file {name}")
        actual = sha256_file(file)
        if actual != expected:
            raise ArtifactError(f"{file}: sha256 {actual} does not match the manifest's {expected}")


def _atomic_write_text(path: Path, text: str) -> None:
    def write(tmp: Path) -> None:
        tmp.write_text(text)

    atomic_write(path, write)
