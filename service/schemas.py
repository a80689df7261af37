"""Request and response bodies of the HTTP API (they are the OpenAPI schema at /docs).

Item and user ids are strings; JSON integers are accepted and read as their decimal string. Size limits that
depend on settings (k, history length, batch sizes, text length) are checked in the routes, which answer 422 with
the limit named.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    model_validator,
)
from pydantic.config import JsonDict

from core.attributes import FIELD_NAME

__all__ = [
    "Condition",
    "ErrorBody",
    "EventsRequest",
    "EventsResponse",
    "Filter",
    "HiddenResponse",
    "HideRequest",
    "ItemsRequest",
    "ItemsResponse",
    "NewItem",
    "ReadyResponse",
    "RecommendBatchRequest",
    "RecommendBatchResponse",
    "RecommendRequest",
    "RecommendResponse",
    "ReloadRequest",
    "ReloadResponse",
    "RestoreRequest",
    "ScoreRequest",
    "ScoreResponse",
    "ScoredItem",
    "SimilarRequest",
    "SimilarResponse",
]


def _id(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _encodable(value: str) -> str:
    """Reject lone surrogates (JSON ``"\\ud800"``): they cannot be stored as UTF-8."""
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise ValueError(f"not valid unicode text: {exc.reason} at {exc.start}") from exc
    return value


Id = Annotated[str, BeforeValidator(_id), Field(min_length=1, max_length=256)]
# ids and texts that are written to the store: the read routes parse JSON in Rust, which already refuses lone
# surrogates; the write routes are parsed by FastAPI (Python's json), which lets them through
StoredId = Annotated[Id, AfterValidator(_encodable)]
Text = Annotated[str, AfterValidator(_encodable)]
# either source of a history; "user_id": null counts as absent
_ONE_SOURCE: JsonDict = {
    "anyOf": [
        {"required": ["user_id"], "properties": {"user_id": {"type": "string"}}},
        {"required": ["history"], "properties": {"history": {"type": "array"}}},
    ]
}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HistorySource(_Body):
    """A history given inline (``history``) or read from the store (``user_id``); at least one of the two."""

    model_config = ConfigDict(json_schema_extra=_ONE_SOURCE)

    user_id: Id | None = Field(default=None, description="read the history from the store")
    history: list[Id] | None = Field(
        default=None, description="item ids, oldest first; used as given"
    )

    @model_validator(mode="after")
    def _one_source(self) -> HistorySource:
        if self.user_id is None and self.history is None:
            raise ValueError("give user_id (stored history) or history (item ids, oldest first)")
        return self


Number = StrictInt | Annotated[StrictFloat, Field(allow_inf_nan=False)]


class Condition(_Body):
    """A condition on one item field; every key given must hold. ``eq``/``in``/``prefix`` for text fields
    (an item with several values, such as several category paths, passes if one of them does), ``gte``/``gt``/
    ``lte``/``lt`` (and ``eq``) for numbers. An item without a value for the field never passes."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"prefix": "Beauty > Makeup"}, {"gte": 5, "lt": 20}]}
    )

    eq: Text | Number | StrictBool | None = Field(default=None, description="equal to this value")
    in_: list[Text] | None = Field(
        default=None, alias="in", min_length=1, description="text equal to one of these"
    )
    prefix: Text | None = Field(
        default=None,
        min_length=1,
        description="category path starting with these whole levels ('Beauty > Makeup' matches "
        "'Beauty > Makeup > Nails', not 'Beauty > Makeup Sets')",
    )
    gte: Number | None = None
    gt: Number | None = None
    lte: Number | None = None
    lt: Number | None = None

    @model_validator(mode="after")
    def _some_test(self) -> Condition:
        if not self.model_fields_set:
            raise ValueError("give at least one of eq, in, prefix, gte, gt, lte, lt")
        return self


FieldName = Annotated[str, Field(pattern=FIELD_NAME)]
# a bare value is shorthand for {"eq": value}
Filter = dict[
    FieldName, Annotated[StrictBool | Number | Text | Condition, Field(union_mode="left_to_right")]
]
_FILTER_DOC = Field(
    default=None,
    description="only items whose fields pass every condition (AND): the fields the artifact's manifest lists "
    "and those POST /items gave; a bare value means eq. An unknown field or a condition of the wrong type for "
    "the field answers 422 naming it.",
    examples=[
        {"categories": {"prefix": "Beauty > Makeup"}, "brand": {"in": ["OPI", "Essie"]}},
        {"price": {"lte": 20}, "available": True},
    ],
)


class RecommendRequest(HistorySource):
    k: int = Field(default=10, ge=1, strict=True, description="at most RECSYS_MAX_K (default 1000)")
    exclude_seen: bool = Field(
        default=True, strict=True, description="leave out the items of the history"
    )
    exclude: list[Id] = Field(default_factory=list, description="item ids never to return")
    filter: Filter | None = _FILTER_DOC


_SHORT = "fewer than k items pass the filter (after exclusions and hidden items): items lists all that do"


class ScoredItem(BaseModel):
    item_id: str
    score: float


class RecommendResponse(BaseModel):
    items: list[ScoredItem] = Field(
        description="best first; score: the model's inner product, or with source 'popular' the blended popularity "
        "(1-w) * training-count share + w * recent-event share, w = RECSYS_POPULARITY_BLEND"
    )
    model_version: str
    source: str = Field(description="'model', or 'popular' when the history has no known item")
    unknown_items: list[str] = Field(
        default_factory=list, description="history ids this model does not know"
    )
    degraded: bool = Field(
        default=False,
        description="the store did not answer in time: the popularity fallback answered instead",
    )
    filtered_short: bool = Field(default=False, description=_SHORT)


class RecommendBatchRequest(_Body):
    requests: list[RecommendRequest] = Field(
        min_length=1,
        description="at most RECSYS_MAX_BATCH (default 512) requests, each as for /recommend",
    )


class RecommendBatchResponse(BaseModel):
    results: list[RecommendResponse] = Field(
        description="one per request, in order: what /recommend answers for it alone"
    )


class ScoreQuery(HistorySource):
    item_ids: list[Id] = Field(min_length=1)


class ScoreRequest(_Body):
    requests: list[ScoreQuery] = Field(min_length=1)


class ScoreResult(BaseModel):
    scores: list[float | None] = Field(
        description="one per item_ids entry; null for an unknown item"
    )
    unknown_items: list[str]
    source: str
    hidden: list[str] = Field(
        default_factory=list,
        description="candidates that are hidden (POST /items/hide): scored, but never recommended",
    )


class ScoreResponse(BaseModel):
    results: list[ScoreResult]
    model_version: str
    degraded: bool = Field(
        default=False,
        description="the store did not answer in time: requests by user_id got popularity scores",
    )


class Event(_Body):
    user_id: StoredId
    item_id: StoredId
    timestamp: float | None = Field(
        default=None,
        strict=True,
        allow_inf_nan=False,
        description="unix seconds (a JSON number, not a boolean); default: arrival time",
    )


class EventsRequest(_Body):
    events: list[Event] = Field(min_length=1)


class EventsResponse(BaseModel):
    accepted: int
    unknown_items: list[str] = Field(
        description="stored anyway; the current model cannot use them yet"
    )


class NewItem(_Body):
    item_id: StoredId
    text: Text | None = Field(
        default=None, description="the item's text, as the trainer composed it"
    )
    fields: dict[Text, Text | list[Text]] | None = Field(
        default=None,
        description="catalogue fields; joined like the trainer does ('; ', lists with ', ')",
    )

    attributes: dict[FieldName, StrictBool | Number | Text | list[Text]] | None = Field(
        default=None,
        description="filterable fields (category path, brand, price, available...), of the kinds the served "
        "fields have; a new name adds a field. Entries of fields with a filterable name count too.",
        examples=[{"categories": "Beauty > Makeup > Nails", "price": 12.5, "available": True}],
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


class HideRequest(_Body):
    item_ids: list[StoredId] = Field(min_length=1, description="trained or added item ids")
    hidden_until: float | None = Field(
        default=None,
        allow_inf_nan=False,
        description="unix seconds; hidden until then (a time in the past hides nothing); absent: until restored",
    )


class RestoreRequest(_Body):
    item_ids: list[StoredId] = Field(min_length=1, description="hidden item ids to recommend again")


class HiddenResponse(BaseModel):
    item_ids: list[str] = Field(description="the ids this request hid or restored")
    hidden_items: int = Field(description="items hidden now")


class SimilarRequest(_Body):
    item_id: Id
    k: int = Field(default=10, ge=1, strict=True, description="at most RECSYS_MAX_K (default 1000)")
    filter: Filter | None = _FILTER_DOC


class SimilarResponse(BaseModel):
    items: list[ScoredItem] = Field(
        description="nearest items by inner product of fused embeddings; the item itself and hidden items left out"
    )
    model_version: str
    filtered_short: bool = Field(default=False, description=_SHORT)


class ReloadRequest(_Body):
    artifact: str | None = Field(
        default=None, description="artifact dir or root; default: the configured one"
    )


class ReloadResponse(BaseModel):
    model_version: str
    previous_version: str | None
    seconds: float


class ReadyResponse(BaseModel):
    model_version: str | None
    store: str = Field(description="'ok' or 'unreachable'")


class ValidationIssue(BaseModel):
    model_config = ConfigDict(extra="allow")

    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every 4xx and 503: ``detail`` names the problem (a list of issues for an invalid body)."""

    detail: str | list[ValidationIssue]
