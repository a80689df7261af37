"""core.histories: the left-padded gather the user encoder reads."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.histories import embed_histories, left_pad


def test_histories_are_right_aligned_with_the_pad_on_the_left_and_cut_to_their_last_items() -> None:
    rows, mask = left_pad([[1, 2, 3], [4], [5, 6, 7, 8, 9], []], length=4, pad=-1)
    assert rows.tolist() == [
        [-1, 1, 2, 3],
        [-1, -1, -1, 4],
        [6, 7, 8, 9],
        [-1, -1, -1, -1],
    ]
    assert mask.tolist() == [
        [False, True, True, True],
        [False, False, False, True],
        [True, True, True, True],
        [False, False, False, False],
    ]
    assert rows.dtype == np.int64
    assert mask.dtype == np.bool_


def test_numpy_histories_and_a_zero_width() -> None:
    rows, mask = left_pad([np.array([3, 1], dtype=np.int32)], length=3)
    assert rows.tolist() == [[0, 3, 1]]
    assert mask.tolist() == [[False, True, True]]
    rows, mask = left_pad([[1, 2]], length=0)
    assert rows.shape == mask.shape == (1, 0)


@given(
    st.lists(st.lists(st.integers(0, 50), max_size=12), min_size=1, max_size=6),
    st.integers(0, 10),
)
def test_each_row_holds_the_last_items_in_order_and_the_mask_marks_exactly_them(
    histories: list[list[int]], length: int
) -> None:
    rows, mask = left_pad(histories, length, pad=99)
    assert rows.shape == mask.shape == (len(histories), length)
    for b, h in enumerate(histories):
        kept = h[max(0, len(h) - length) :]
        assert rows[b][mask[b]].tolist() == kept
        assert mask[b].tolist() == [False] * (length - len(kept)) + [True] * len(kept)
        assert (rows[b][~mask[b]] == 99).all()


def test_embed_histories_gathers_table_rows_and_zeroes_the_padding() -> None:
    table = np.arange(1, 13, dtype=np.float32).reshape(4, 3) * 0.5  # (N=4, d=3), no zero row
    item_emb, mask = embed_histories(table, [[2, 3], [1, 0, 2, 3]], length=3)
    assert item_emb.dtype == np.float32
    assert item_emb.shape == (2, 3, 3)
    np.testing.assert_array_equal(item_emb[0], [np.zeros(3), table[2], table[3]])
    np.testing.assert_array_equal(item_emb[1], table[[0, 2, 3]])
    assert mask.tolist() == [[False, True, True], [True, True, True]]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="length must be >= 0"):
        left_pad([[1]], length=-1)
    with pytest.raises(ValueError, match="history 1 must be one-dimensional"):
        left_pad([[1], [[1, 2]]], length=2)
