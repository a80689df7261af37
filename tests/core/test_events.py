"""core.events: the layout of the service's event stream, written and read back."""

from __future__ import annotations

import pytest

from core.events import EVENT_FIELDS, decode_event, encode_event, events_stream


def test_an_entry_reads_back_as_written() -> None:
    fields = encode_event("u1", "i7", 1_700_000_000.25)
    assert tuple(fields) == EVENT_FIELDS
    assert fields["timestamp"] == "1700000000.25"
    raw = {k.encode(): v.encode() for k, v in fields.items()}  # as Redis returns it
    assert decode_event(raw) == ("u1", "i7", 1_700_000_000.25)


def test_the_stream_key_and_broken_entries() -> None:
    assert events_stream("recsys") == "recsys:events"
    with pytest.raises(ValueError, match="without the field 'timestamp'"):
        decode_event({b"user_id": b"u", b"item_id": b"i"})
    with pytest.raises(ValueError, match="could not convert"):
        decode_event({b"user_id": b"u", b"item_id": b"i", b"timestamp": b"soon"})


def test_decoded_replies_read_the_same() -> None:
    fields = {
        "user_id": "u1",
        "item_id": "i7",
        "timestamp": "3.5",
    }  # a client with decode_responses
    assert decode_event(fields) == ("u1", "i7", 3.5)
    with pytest.raises(ValueError, match="without fields"):
        decode_event(None)
