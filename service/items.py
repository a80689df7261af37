"""Items added after training (``POST /items``) and their replay on other pods and on a newly loaded version.

An item is embedded from its text with the artifact's text encoder, persisted in the store, then added to the
runtime's table and index; other pods pull it from the store's item log (``sync_items``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from core.item_text import compose_item_text
from service.errors import RequestError, StoreUnavailableError, check_limit
from service.runtime import ModelRuntime
from service.schemas import ItemsRequest, ItemsResponse, NewItem
from service.settings import Settings
from service.store import HistoryStore, StoredItem

__all__ = ["add_items", "add_stored", "catch_up", "sync_items"]

logger = logging.getLogger(__name__)
EMBED_CHUNK = 256


class ItemsHost(Protocol):
    """What these functions read of the service state (``service.state.ServiceState`` is one)."""

    settings: Settings
    store: HistoryStore
    runtime: ModelRuntime | None
    items_lock: asyncio.Lock

    def require_runtime(self) -> ModelRuntime: ...


async def add_items(state: ItemsHost, body: ItemsRequest) -> ItemsResponse:
    """Embed, persist, then serve new items; nothing is served that the store did not take."""
    rt = state.require_runtime()
    s = state.settings
    check_limit("items", len(body.items), s.max_items_per_request)
    if not rt.manifest.supports_text:
        raise RequestError(
            409,
            f"model {rt.version} ({rt.manifest.embedding_mode}) cannot embed items from text",
        )
    ids = [item.item_id for item in body.items]
    if len(set(ids)) != len(ids):
        raise RequestError(422, "duplicate item_id in one request")
    texts = [
        item.text if item.text is not None else compose_item_text((item.fields or {}).values())
        for item in body.items
    ]
    for item_id, text in zip(ids, texts, strict=True):
        if not text.strip():
            raise RequestError(422, f"item {item_id!r}: empty text")
        check_limit(f"item {item_id!r} text length", len(text), s.max_text_chars)
    trained = [i for i in ids if rt.is_trained(i)]
    if trained:
        raise RequestError(409, f"already in the trained catalogue: {trained[:10]}")
    attrs = [_attributes(rt, item) for item in body.items]
    async with state.items_lock:
        emb = await rt.run(rt.embed_texts, texts)  # (B, d_l)
        stored = [StoredItem(*i) for i in zip(ids, texts, emb, attrs, strict=True)]
        await state.store.save_items(stored, rt.encoder_key)  # persisted before it is served
        await rt.run(rt.add_items, ids, texts, emb, attrs)
    return ItemsResponse(added=ids, index_items=rt.live_items, model_version=rt.version)


def _attributes(rt: ModelRuntime, item: NewItem) -> dict[str, Any]:
    """The item's filterable attributes: ``fields`` entries named like a filter field, then ``attributes``."""
    kinds = rt.fields.kinds
    named = {k: v for k, v in (item.fields or {}).items() if k in kinds}
    return rt.fields.normalize_new(item.item_id, named | (item.attributes or {}))


async def catch_up(state: ItemsHost, rt: ModelRuntime) -> None:
    """Add every stored item ``rt`` lacks (a version being loaded, or one that started while the store failed)."""
    rt.cold_synced = False
    stored, cursor = await state.store.load_items(rt.encoder_key)
    await _add_new(state, rt, stored, cursor)
    rt.cold_synced = True


async def sync_items(state: ItemsHost) -> None:
    """Add items that other pods stored since this runtime last looked (idempotent)."""
    rt = state.runtime
    if rt is None or not rt.manifest.supports_text:
        return
    if not rt.cold_synced:
        await catch_up(state, rt)
        return
    items, cursor = await state.store.items_since(rt.cold_cursor, rt.encoder_key)
    await _add_new(state, rt, items, cursor)


async def _add_new(
    state: ItemsHost, rt: ModelRuntime, items: Sequence[StoredItem], cursor: str
) -> None:
    """Add the stored items ``rt`` lacks (new ids or changed texts; trained items never), then move its cursor."""
    async with state.items_lock:
        fresh = [
            i
            for i in items
            if (rt.cold_texts.get(i.item_id), rt.fields.added.get(i.item_id, {}))
            != (i.text, i.attributes)
            and not rt.is_trained(i.item_id)
        ]
        if fresh:
            await add_stored(state, rt, fresh)
        rt.cold_cursor = cursor


async def add_stored(state: ItemsHost, rt: ModelRuntime, items: Sequence[StoredItem]) -> None:
    """Add stored items to ``rt``, embedding (and caching) the texts that lack this encoder's vector."""
    d_l = rt.manifest.dims.d_l
    vectors = {i.item_id: i.embedding for i in items if i.embedding is not None}
    vectors = {k: v for k, v in vectors.items() if v.shape == (d_l,)}
    missing = [i for i in items if i.item_id not in vectors]
    for start in range(0, len(missing), EMBED_CHUNK):
        chunk = missing[start : start + EMBED_CHUNK]
        emb = await rt.run(rt.embed_texts, [i.text for i in chunk])  # (b, d_l)
        try:  # only a cache: a store fault costs a re-embedding next time, not the items
            await state.store.cache_embeddings([i.item_id for i in chunk], emb, rt.encoder_key)
        except StoreUnavailableError as exc:
            logger.warning("text embeddings not cached: %s", exc)
        vectors.update(zip([i.item_id for i in chunk], emb, strict=True))
    if missing:
        logger.info("embedded the text of %d stored items for %s", len(missing), rt.version)
    ids = [i.item_id for i in items]
    emb = np.stack([vectors[i] for i in ids]).astype(np.float32)  # (B, d_l)
    await rt.run(rt.add_items, ids, [i.text for i in items], emb, [i.attributes for i in items])
