"""Service settings, read from environment variables prefixed ``RECSYS_`` (e.g. ``RECSYS_REDIS_URL``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Everything the service reads from its environment.

    Attributes:
        artifact: an artifact directory, or a root whose ``CURRENT`` file names the version to serve.
        redis_url: e.g. ``redis://127.0.0.1:6379/0``; None keeps histories and new items in process memory.
        redis_timeout_ms: connect and reply timeout of the store reads on the request path (a user's history):
            past it, ``/recommend`` and ``/score`` answer from the popularity fallback, marked ``degraded``.
        redis_write_timeout_ms: the same for writes and background reads (events, items, item sync); a write
            that fails or times out answers 503 with ``Retry-After``.
        key_prefix: every Redis key the service writes starts with ``<key_prefix>:``.
        api_key: when set, write and admin routes need the header ``X-API-Key`` with this value.
        history_length: items kept per user (None: the model's max_len).
        threads: ONNX Runtime intra-op and FAISS threads (one process per core is the scaling model).
        max_micro_batch: most /recommend requests answered together (one pipelined history read, one encode and
            one search).
        reload_poll_seconds: re-read ``<artifact>/CURRENT`` this often and hot-swap a new version (0: off).
        cold_sync_seconds: how often items added through another pod, the hidden set and the top of the recent
            popularity are pulled from Redis (0: off).
        popularity_half_life_seconds: an event's weight in the recent popularity halves every this many seconds.
        popularity_blend: weight of the recent events' share in the popularity fallback; the training counts'
            share gets the rest (0: training counts only; 1: recent events only).
        popularity_items: items with the most recent events each replica reads (the store keeps ten times as many).
        history_cache_users: users whose stored histories each replica keeps in memory, exact through Redis's
            invalidation messages (``CLIENT TRACKING``, Redis 6 or later; a server without it gets every read);
            0 reads every history from Redis.
        freeze_heap: after a model loads, collect once and ``gc.freeze()`` what is alive, so that no full garbage
            collection walks the model again (each took 64-150 ms with a 1e5-item model and stalled every request).
    """

    model_config = SettingsConfigDict(env_prefix="RECSYS_", extra="ignore", frozen=True)

    artifact: Path | None = None
    redis_url: str | None = None
    redis_timeout_ms: float = Field(default=50.0, gt=0, le=60_000)
    redis_write_timeout_ms: float = Field(default=1000.0, gt=0, le=60_000)
    key_prefix: str = Field(default="recsys", pattern=r"^[A-Za-z0-9_.:-]+$")
    api_key: SecretStr | None = None
    history_length: int | None = Field(default=None, gt=0, le=10_000)
    threads: int = Field(default=1, gt=0, le=64)
    max_micro_batch: int = Field(default=64, gt=0, le=4096)
    max_k: int = Field(default=1000, gt=0)
    max_history: int = Field(default=1000, gt=0)
    max_batch: int = Field(
        default=512,
        gt=0,
        description="requests per /score and /recommend/batch call, events per /events",
    )
    max_candidates: int = Field(default=10_000, gt=0, description="item ids per /score request")
    max_items_per_request: int = Field(default=256, gt=0)
    max_text_chars: int = Field(default=10_000, gt=0)
    max_body_bytes: int = Field(
        default=16 * 2**20, gt=0, description="largest request body of any route (413 above)"
    )
    events_stream_maxlen: int = Field(default=1_000_000, gt=0)
    reload_poll_seconds: float = Field(default=0.0, ge=0)
    cold_sync_seconds: float = Field(default=1.0, ge=0)
    popularity_half_life_seconds: float = Field(default=86_400.0, ge=1, allow_inf_nan=False)
    popularity_blend: float = Field(default=0.5, ge=0, le=1)
    popularity_items: int = Field(default=1000, gt=0, le=100_000)
    history_cache_users: int = Field(default=20_000, ge=0, le=10_000_000)
    freeze_heap: bool = True
