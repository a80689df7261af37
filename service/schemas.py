"""Request and response bodies of the HTTP API (they are the OpenAPI schema at /docs).

Item and user ids are strings; JSON integers are accepted and read as their decimal string. Size limits that
depend on settings (k, history length, batch sizes, text length) are checked in the routes, which answer 422 with
the limit named.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

__all__ = [
    "EventsRequest",
    "EventsResponse",
    "ItemsRequest",
    "ItemsResponse",
    "NewItem",
    "RecommendRequest",
    "RecommendResponse",
    "ReloadRequest",
    "ReloadResponse",
    "ScoreRequest",
    "ScoreResponse",
    "ScoredItem",
]


def _id(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


Id = Annotated[str, BeforeValidator(_id), Field(min_length=1, max_length=256)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _HistorySource(_Body):
    user_id: Id | None = Field(default=None, description="read the history from the store")
    history: list[Id] | None = Field(
        default=None, description="item ids, oldest first; used as given"
    )

    @model_validator(mode="after")
    def _one_source(self) -> _HistorySource:
        if self.user_id is None and self.history is None:
            raise ValueError("give user_id (stored history) or history (item ids, oldest first)")
        return self


class RecommendRequest(_HistorySource):
    k: int = Field(default=10, ge=1)
    exclude_seen: bool = Field(default=True, description="leave out the items of the history")
    exclude: list[Id] = Field(default_factory=list, description="item ids never to return")


class ScoredItem(BaseModel):
    item_id: str
    score: float


class RecommendResponse(BaseModel):
    items: list[ScoredItem]
    model_version: str
    source: str = Field(description="'model', or 'popular' when the history has no known item")
    unknown_items: list[str] = Field(
        default_factory=list, description="history ids this model does not know"
    )


class ScoreQuery(_HistorySource):
    item_ids: list[Id] = Field(min_length=1)


class ScoreRequest(_Body):
    requests: list[ScoreQuery] = Field(min_length=1)


class ScoreResult(BaseModel):
    scores: list[float | None] = Field(
        description="one per item_ids entry; null for an unknown item"
    )
    unknown_items: list[str]
    source: str


class ScoreResponse(BaseModel):
    results: list[ScoreResult]
    model_version: str


class Event(_Body):
    user_id: Id
    item_id: Id
    timestamp: float | None = Field(default=None, description="unix seconds; default: arrival time")


class EventsRequest(_Body):
    events: list[Event] = Field(min_length=1)


class EventsResponse(BaseModel):
    accepted: int
    unknown_items: list[str] = Field(
        description="stored anyway; the current model cannot use them yet"
    )


class NewItem(_Body):
    item_id: Id
    text: str | None = Field(
        default=None, description="the item's text, as the trainer composed it"
    )
    fields: dict[str, str | list[str]] | None = Field(
        default=None,
        description="catalogue fields; joined like the trainer does ('; ', lists with ', ')",
    )

    @model_validator(mode="after")
    def _one_text(self) -> NewItem:
        if (self.text is None) == (self.fields is None):
            raise ValueError("give exactly one of text or fields")
        return self


class ItemsRequest(_Body):
    items: list[NewItem] = Field(min_length=1)


class ItemsResponse(BaseModel):
    added: list[str]
    index_items: int
    model_version: str


class ReloadRequest(_Body):
    artifact: str | None = Field(
        default=None, description="artifact dir or root; default: the configured one"
    )


class ReloadResponse(BaseModel):
    model_version: str
    previous_version: str | None
    seconds: float
