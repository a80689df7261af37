"""The AlphaFuse/DreamRec format: the pandas pickles ``train/val/test_data.df`` + ``data_statis.df``.

Owns ``read_dreamrec_df`` and the per-file parser that turns padded ``seq``/``len_seq``/``next``
rows into user sequences (left or right padding detected per file), and ``write_dreamrec_df``, which writes a
split in that layout so the authors' trainer and this one can be run on the same files. Unpickling runs code
stored in the file: this format is read only when named explicitly (see ``read_dreamrec_df``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from core.files import publish_dir
from training.data.dataset import Examples, SequenceDataset, Split
from training.data.readers.tables import _finish, _require_columns

logger = logging.getLogger(__name__)

DREAMREC_PARTS = (("train", "train_data.df"), ("valid", "val_data.df"), ("test", "test_data.df"))


def _dreamrec_part(
    path: Path, seq_size: int, item_num: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """One ``.df`` file -> (lengths (n,), items (lengths.sum(),)): real items of seq, then next."""
    frame = pd.read_pickle(path)
    _require_columns(frame, path, ["seq", "len_seq", "next"])
    lengths = frame["seq"].map(len).to_numpy()
    if np.any(lengths != seq_size):
        row = int(np.flatnonzero(lengths != seq_size)[0])
        raise ValueError(
            f"{path} row {row}: field seq: length {lengths[row]} != seq_size {seq_size}"
        )
    seqs = np.array(frame["seq"].tolist(), dtype=np.int64).reshape(len(frame), seq_size)
    lens = frame["len_seq"].to_numpy(dtype=np.int64)
    nexts = frame["next"].to_numpy(dtype=np.int64)
    for label, bad in (
        ("len_seq", (lens < 0) | (lens > seq_size)),
        ("next", (nexts < 0) | (nexts >= item_num)),
        ("seq", ((seqs < 0) | (seqs > item_num)).any(axis=1)),
    ):
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            value = frame[label].iloc[row]
            raise ValueError(
                f"{path} row {row}: field {label}: bad value {value} (item_num {item_num})"
            )
    is_real = seqs != item_num
    # LLaRA's lastfm files give len_seq 1 (not 0) to rows whose seq is only padding: such a row is a user with
    # only its next item
    empty = ~is_real.any(axis=1) & (lens > 0)
    if empty.any():
        logger.warning(
            "%s: %d rows have a seq of only padding but len_seq > 0; read as users with only their next item",
            path,
            int(empty.sum()),
        )
        lens = np.where(empty, 0, lens)
    column = np.arange(seq_size)
    right = column[None, :] < lens[:, None]  # (n, S) real items first, pads after
    left = column[None, :] >= seq_size - lens[:, None]  # (n, S) pads first, real items last
    real = right if np.array_equal(is_real, right) else left
    if not np.array_equal(is_real, real):
        row = int(np.flatnonzero((is_real != right).any(axis=1) & (is_real != left).any(axis=1))[0])
        raise ValueError(
            f"{path} row {row}: field seq: pad id {item_num} is neither left nor right padding "
            f"with len_seq={lens[row]}: {seqs[row].tolist()}"
        )
    with_next = np.concatenate([seqs, nexts[:, None]], axis=1)  # (n, S+1)
    keep = np.concatenate([real, np.ones((len(frame), 1), dtype=bool)], axis=1)
    return lens + 1, with_next[keep]


def read_dreamrec_df(path: Path, name: str | None = None) -> SequenceDataset:
    """Read the AlphaFuse/DreamRec pickles (``train/val/test_data.df``, ``data_statis.df``).

    Security: these are pandas pickles, and unpickling runs code stored in the file. They are read
    only when the user names this format and folder explicitly (never auto-detected); point it only
    at files you made or trust.

    Each row (``seq`` padded to ``seq_size`` with id ``item_num``, ``len_seq``, ``next``) becomes
    one user whose sequence is the real items of ``seq`` followed by ``next``; left or right
    padding is detected per file from where the pad id sits. A row whose ``seq`` is only padding is a user with
    only its ``next`` item whatever its ``len_seq`` (LLaRA's lastfm files give such rows ``len_seq`` 1); rows
    read that way are counted in one warning per file. User ids are ``"<part>:<row>"`` with
    part train, valid or test. Items are ``0..item_num-1`` (external id ``str(k)``) with empty
    text: pass the item embeddings as a ``.npy`` file.
    """
    parts = [("statis", "data_statis.df"), *DREAMREC_PARTS]
    missing = [file for _, file in parts if not (path / file).is_file()]
    if missing:
        found = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
        raise ValueError(f"{path}: missing {missing}; files found: {found}")
    statis = pd.read_pickle(path / "data_statis.df")
    _require_columns(statis, path / "data_statis.df", ["seq_size", "item_num"])
    seq_size, item_num = int(statis["seq_size"].iloc[0]), int(statis["item_num"].iloc[0])
    user_ids: list[str] = []
    lengths: list[NDArray[np.int64]] = []
    items: list[NDArray[np.int64]] = []
    for part, file in DREAMREC_PARTS:
        part_lengths, part_items = _dreamrec_part(path / file, seq_size, item_num)
        user_ids += [f"{part}:{row}" for row in range(len(part_lengths))]
        lengths.append(part_lengths)
        items.append(part_items)
    user_idx = np.repeat(np.arange(len(user_ids), dtype=np.int64), np.concatenate(lengths))
    item_ids = [str(k) for k in range(item_num)]
    return _finish(
        name or path.name, item_ids, [""] * item_num, user_ids, user_idx, np.concatenate(items)
    )


def write_dreamrec_df(
    split: Split,
    item_ids: list[str],
    folder: Path,
    embeddings: NDArray[np.float32] | None = None,
    embedding_name: str = "text",
) -> None:
    """Write ``split`` in the authors' layout, so that their trainer and ``data.protocol = "given"`` read the same rows.

    Every example of ``split.train``/``valid``/``test`` becomes one row of ``train/val/test_data.df``: ``seq`` its
    history (``split.max_len`` ids, left-padded with ``item_num``, most recent last), ``len_seq`` the number of real
    ids, ``next`` the target. ``data_statis.df`` holds ``seq_size`` and ``item_num``; ``item_ids.json`` maps row k to
    the external id. With ``embeddings`` ((N, d_l), row k = item k), they are written twice: as
    ``<embedding_name>_emb.pickle`` (what the authors' code loads, ``--language_model_type <embedding_name>``) and as
    ``item_embeddings.npy`` (``text.npy_path`` for this trainer). The folder appears complete or not at all.

    Raises:
        FileExistsError: ``folder`` exists.
        ValueError: ``embeddings`` do not have one row per item.
    """
    if embeddings is not None and embeddings.shape[0] != split.num_items:
        raise ValueError(
            f"embeddings have {embeddings.shape[0]} rows, the split {split.num_items} items"
        )
    parts = (split.train, split.valid, split.test)

    def write(tmp: Path) -> None:
        for (_, file), examples in zip(DREAMREC_PARTS, parts, strict=True):
            _frame(examples, split.num_items).to_pickle(tmp / file)
        statis = pd.DataFrame({"seq_size": [split.max_len], "item_num": [split.num_items]})
        statis.to_pickle(tmp / "data_statis.df")
        (tmp / "item_ids.json").write_text(json.dumps(item_ids))
        if embeddings is not None:
            table = np.ascontiguousarray(embeddings, dtype=np.float32)
            pd.to_pickle(table, tmp / f"{embedding_name}_emb.pickle")
            np.save(tmp / "item_embeddings.npy", table)

    publish_dir(folder, write)


def _frame(examples: Examples, pad: int) -> pd.DataFrame:
    """One part's rows: (n, L) left-padded histories -> ``seq``, ``len_seq``, ``next``."""
    return pd.DataFrame(
        {
            "seq": examples.histories.tolist(),
            "len_seq": (examples.histories != pad).sum(axis=1),
            "next": examples.targets,
        }
    )
