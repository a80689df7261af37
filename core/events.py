"""The service's event stream: one Redis stream entry per served interaction, the next model's training data.

``<prefix>:events`` holds one entry per ``POST /events`` interaction with the fields ``user_id``, ``item_id``
and ``timestamp`` (the float seconds as ``repr`` writes them). The service appends the entries; ``recsys events``
reads them back as the trainer's canonical interaction log, whose columns are the same three names.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["EVENT_FIELDS", "as_text", "decode_event", "encode_event", "events_stream"]

EVENT_FIELDS = ("user_id", "item_id", "timestamp")


def events_stream(prefix: str) -> str:
    """The stream's key under the key prefix ``prefix``."""
    return f"{prefix}:events"


def encode_event(user_id: str, item_id: str, timestamp: float) -> dict[str, str]:
    """One stream entry's fields."""
    return {"user_id": user_id, "item_id": item_id, "timestamp": repr(float(timestamp))}


def decode_event(fields: Mapping[bytes | str, bytes | str] | None) -> tuple[str, str, float]:
    """(user_id, item_id, timestamp) of one stream entry as Redis returns it (bytes, or str when decoded).

    Raises:
        ValueError: the entry has no fields, a field is missing or the timestamp is not a number.
    """
    if fields is None:
        raise ValueError("event entry without fields")
    values = {as_text(k): as_text(v) for k, v in fields.items()}
    try:
        user, item, stamp = (values[name] for name in EVENT_FIELDS)
    except KeyError as exc:
        raise ValueError(f"event entry without the field {exc.args[0]!r}: {values}") from exc
    return user, item, float(stamp)


def as_text(value: bytes | str | None) -> str:
    """A Redis reply value as text (``None``: ValueError)."""
    if value is None:
        raise ValueError("missing value in a Redis reply")
    return value.decode() if isinstance(value, bytes) else value
