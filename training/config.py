"""Experiment configuration: TOML files validated by pydantic (unknown keys are errors).

A config has one section per stage: ``[data]`` (what to read and how to split), ``[text]`` (language embeddings),
``[embedding]`` (the item-embedding mode and AlphaFuse settings), ``[model]`` (the encoder), ``[train]`` (the
optimisation) and ``[eval]``. ``load_config`` reads a file and applies ``--set section.key=value`` overrides whose
values are TOML literals (``train.lr=1e-3``, ``embedding.mode="id"``, ``train.seeds=[1,2]``).
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from training.data.readers import DataSource
from training.items.text_embeddings import TextEmbeddingConfig

__all__ = [
    "LLMESR_ARCHITECTURE",
    "ExperimentConfig",
    "add_override_option",
    "load_config",
    "parse_override",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    source: DataSource
    protocol: Literal["leave_one_out", "cold_start_users", "cold_items", "given"] = Field(
        "leave_one_out",
        description="given: the train/valid/test rows of dreamrec_df files as they are (no re-split)",
    )
    max_len: int = Field(
        50, ge=1, description="history window L (cold_start_users: the paper's 10)"
    )
    min_user_interactions: int = Field(0, ge=0, description="k-core on users (0 = no filter)")
    min_item_interactions: int = Field(0, ge=0, description="k-core on items (0 = no filter)")
    max_sequence_length: int | None = Field(
        None, ge=2, description="keep only each user's most recent items (applied before splitting)"
    )
    split_seed: int = 0
    cold_share: float = Field(
        0.1, gt=0, lt=1, description="cold_items: share of the interacted items held out"
    )
    cold_pick: Literal["random", "newest"] = Field(
        "random", description="cold_items: uniform (seeded) or latest first interaction"
    )
    cold_tuning: bool = Field(
        False,
        description="cold_items: a tuning split that never sees the test's cold items: they are removed from "
        "the catalogue first (not yet released), then the same pick runs on the rest",
    )

    @model_validator(mode="after")
    def _tuning_needs_cold_items(self) -> DataConfig:
        if self.cold_tuning and self.protocol != "cold_items":
            raise ValueError(
                f"data.cold_tuning needs data.protocol='cold_items', got {self.protocol!r}"
            )
        if self.protocol == "given" and self.source.format != "dreamrec_df":
            raise ValueError(
                "data.protocol='given' needs data.source.format='dreamrec_df' (the files that carry a split), "
                f"got {self.source.format!r}"
            )
        return self


class EmbeddingConfig(_Section):
    mode: Literal["id", "llminit", "alphafuse"] = "alphafuse"
    dim: int = Field(128, ge=1)
    null_dim: int | None = Field(64, ge=0)
    null_threshold: float | None = None
    scale: float = 40.0
    standardize: bool = True
    cover: bool = False
    item_weighting: Literal["uniform", "popularity"] = "uniform"
    id_init: Literal["zeros", "normal"] = "zeros"
    init_std: float = Field(1.0, gt=0)
    zero_unseen_ids: bool = Field(
        True,
        description="hold the ID rows of items absent from training at zero (honest cold items)",
    )
    id_dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="alphafuse: training-time rate at which an item occurrence's ID part is zeroed, so the "
        "encoder also learns to rank items that carry text only (new items)",
    )
    id_decay: float = Field(
        0.0,
        ge=0.0,
        description="alphafuse: AdamW's decoupled weight decay on the ID table alone; it pulls every trained "
        "item's ID part toward zero, i.e. the item toward its text-only form (a soft anchor when null_dim = dim)",
    )
    language_map: Literal["none", "scale", "linear"] = Field(
        "none",
        description="alphafuse: one trainable map shared by every item's language part (a per-coordinate scale "
        "or a d x d matrix, both starting as the identity); new items get it too, through the exported basis",
    )

    @model_validator(mode="before")
    @classmethod
    def _threshold_replaces_default_null_dim(cls, data: Any) -> Any:
        # TOML has no null: a config that sets null_threshold and not null_dim means "no fixed null_dim"
        if (
            isinstance(data, dict)
            and data.get("null_threshold") is not None
            and "null_dim" not in data
        ):
            return {**data, "null_dim": None}
        return data

    @model_validator(mode="after")
    def _one_null_rule(self) -> EmbeddingConfig:
        if self.mode == "alphafuse" and (self.null_dim is None) == (self.null_threshold is None):
            raise ValueError("embedding: set exactly one of null_dim or null_threshold")
        for knob in ("id_dropout", "id_decay", "language_map"):
            if getattr(self, knob) not in (0.0, "none") and self.mode != "alphafuse":
                raise ValueError(
                    f"embedding.{knob} applies to mode 'alphafuse' only, not {self.mode!r}"
                )
        return self


LLMESR_ARCHITECTURE = (
    'model.name="llmesr"',
    'embedding.mode="llminit"',
    "model.num_blocks=2",
    "model.dropout=0.5",
)
"""Overrides that turn a SASRec config into LLM-ESR with its paper's architecture: its own ID view initialised from
the language embeddings (``llminit``), 2 blocks, dropout 0.5. ``load_config(path, [*LLMESR_ARCHITECTURE, ...])``."""


class LLMESRSettings(_Section):
    """LLM-ESR only (model.name = "llmesr"); defaults are the paper's (docs/algorithms.md, "LLM-ESR").

    The encoder settings LLM-ESR shares with SASRec are in ``LLMESR_ARCHITECTURE``. The paper's training settings
    (train.loss "bce" with 1 per-example negative, batch 128, lr 1e-3) are not applied by it: the training objective
    stays the config's unless set.
    """

    cross_heads: int = Field(2, ge=1, description="heads of the cross-attention between views")
    alpha: float = Field(0.1, ge=0.0, description="weight of the self-distillation loss")
    similar_users: int = Field(10, ge=1, description="neighbours averaged into the teacher")
    adapter_hidden: int | None = Field(None, ge=1, description="None = d_l // 2 (1536 -> 768)")
    prompt_chars: int = Field(
        1000, ge=1, description="user prompts keep the last chars of the history (fits 256 tokens)"
    )
    user_text: Literal["prompt", "mean_items"] = Field(
        "prompt",
        description="user vector for retrieval: the encoded prompt of training-item texts (original),"
        " or the mean of those items' language embeddings (no encoder pass; ~1000x cheaper on CPU)",
    )


class ModelConfig(_Section):
    name: Literal["sasrec", "dreamrec", "llmesr"] = "sasrec"
    num_blocks: int = Field(1, ge=1)
    num_heads: int = Field(1, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    semantic_query_beta: float = Field(
        0.0,
        ge=0.0,
        description="sasrec with alphafuse: train (and serve) the user vector as the semantic query with this beta, "
        "so the encoder learns beside the history's content term instead of meeting it only at serving time",
    )
    llmesr: LLMESRSettings = LLMESRSettings()


class DiffusionConfig(_Section):
    """DreamRec's diffusion process and sampler (``model.name = "dreamrec"`` only)."""

    timesteps: int = Field(2000, ge=1)
    schedule: Literal["linear", "cosine", "exp", "sqrt"] = "linear"
    beta_start: float = Field(1e-4, gt=0, lt=1)
    beta_end: float = Field(0.02, gt=0, lt=1)
    p_uncond: float = Field(0.1, ge=0, lt=1, description="classifier-free-guidance dropout")
    w: float = Field(5.0, ge=0, description="guidance weight")
    sampler: Literal["ddim", "ancestral"] = "ddim"
    steps: int = Field(20, ge=1, description="DDIM network calls (evaluation and the ONNX graph)")
    init_noise: Literal["zeros", "seeded"] = "zeros"
    noise_seed: int = 0

    @model_validator(mode="after")
    def _steps_within_t(self) -> DiffusionConfig:
        if self.steps > self.timesteps:
            raise ValueError(f"diffusion: steps={self.steps} > timesteps={self.timesteps}")
        return self


class TrainConfig(_Section):
    loss: Literal["infonce", "bce", "ce"] = "infonce"
    num_negatives: int = Field(64, ge=1)
    negatives: Literal["pooled", "per_example", "shared"] = Field(
        "pooled",
        description="pooled: each example's own negatives, drawn from a pool of train.negative_pool items per "
        "batch (as good as per_example at about twice its speed); per_example: drawn from all items (the "
        "reference code); shared: one set of num_negatives for the whole batch (fastest, loses quality)",
    )
    negative_pool: int = Field(
        1024,
        ge=2,
        description="pooled: items drawn per batch that the examples' negatives come from",
    )
    temperature: float = Field(0.07, gt=0)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(256, ge=1)
    max_epochs: int = Field(100, ge=1)
    patience: int = Field(5, ge=1, description="evaluations without improvement before stopping")
    eval_every: int = Field(1, ge=1)
    select_metric: str = "NDCG@10"
    seed: int = 0
    device: str = "auto"
    threads: int | None = Field(None, ge=1)


class EvalConfig(_Section):
    protocol: Literal["standard", "long_tail"] = Field(
        "standard",
        description="long_tail: LLM-ESR's sampled 1+100 protocol for validation, test and groups",
    )
    group_thresholds: Literal["pareto", "llmesr"] = Field(
        "pareto", description="head/tail thresholds: Pareto 20/80, or LLM-ESR's per-dataset values"
    )
    mask_history: bool = Field(True, description="mask the user's past items at validation")
    sampled_negatives: int = Field(100, ge=1, description="negatives of the sampled protocol")
    head_share: float = Field(0.2, gt=0, lt=1, description="Pareto head share for groups")
    tail_item_threshold: float | None = None
    tail_user_threshold: float | None = None
    batch_size: int = Field(1024, ge=1)
    cold_remedies: bool = Field(
        True,
        description="cold_items protocol, alphafuse: also evaluate the offline remedies (6 more full rankings)",
    )
    semantic_query_betas: list[float] = Field(
        default_factory=lambda: [0.25, 0.5, 1.0, 2.0],
        description="alphafuse with a null space: semantic-query betas evaluated after training (cold_items: "
        "each one reported with the remedies; other protocols: the best on validation, beta 0 included, is tested "
        "once); [] = none",
    )

    @field_validator("semantic_query_betas")
    @classmethod
    def _positive_betas(cls, betas: list[float]) -> list[float]:
        if any(b <= 0 for b in betas):
            raise ValueError(
                f"semantic_query_betas must be > 0 (beta 0 is always included), got {betas}"
            )
        return betas


class ExperimentConfig(_Section):
    name: str
    data: DataConfig
    text: TextEmbeddingConfig = TextEmbeddingConfig()
    embedding: EmbeddingConfig = EmbeddingConfig()
    model: ModelConfig = ModelConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="after")
    def _llmesr_embedding(self) -> ExperimentConfig:
        emb = self.embedding
        if self.model.name == "llmesr" and (emb.mode != "llminit" or emb.dim % 2):
            raise ValueError(
                "model llmesr needs embedding.mode = 'llminit' (its ID view is PCA-initialised from "
                f"the language embeddings) and an even embedding.dim = 2 x view dim; got "
                f"mode={emb.mode!r}, dim={emb.dim}"
            )
        return self

    @model_validator(mode="after")
    def _trained_query_has_language_coordinates(self) -> ExperimentConfig:
        emb, beta = self.embedding, self.model.semantic_query_beta
        if beta and not (
            self.model.name == "sasrec"
            and emb.mode == "alphafuse"
            and emb.null_dim is not None
            and 0 < emb.null_dim < emb.dim
        ):
            raise ValueError(
                "model.semantic_query_beta needs model.name='sasrec', embedding.mode='alphafuse' and "
                f"0 < embedding.null_dim < embedding.dim; got {self.model.name!r}, {emb.mode!r}, "
                f"null_dim={emb.null_dim}, dim={emb.dim}"
            )
        return self

    @model_validator(mode="after")
    def _cold_items_untouched(self) -> ExperimentConfig:
        if self.data.protocol == "cold_items" and self.train.weight_decay > 0:
            raise ValueError(
                "data.protocol='cold_items' needs train.weight_decay=0: AdamW's decoupled decay would shrink the "
                "held-out items' rows although they get no gradient"
            )
        return self


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=1e-3"`` -> (["train", "lr"], 0.001). Bare words that are not TOML become strings, except
    ``none``, which TOML cannot say: it sets an optional key to None (``embedding.null_threshold=none``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override must look like section.key=value, got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = None if raw.strip() == "none" else raw.strip()
    return key.strip().split("."), value


def add_override_option(
    parser: argparse.ArgumentParser,
    help_text: str = "override a config value, e.g. --set train.lr=1e-3 (TOML literal)",
) -> None:
    """The repeatable ``--set KEY=VALUE`` option of every command that loads a config: the values land in
    ``args.overrides``, for `load_config`."""
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help_text
    )


def load_config(path: Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a TOML experiment config, apply overrides, validate (relative data paths are from the cwd)."""
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: invalid TOML: {exc}") from exc
    for item in overrides or []:
        keys, value = parse_override(item)
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {k!r} is not a section")
        node[keys[-1]] = value
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"{path}: {exc}") from exc
