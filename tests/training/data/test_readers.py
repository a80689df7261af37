"""Tests of the readers: the real datasets in ../shared/data and small files written to tmp_path."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pydantic
import pytest

from training.data.dataset import SequenceDataset
from training.data.readers import DataSource, load_dataset


@pytest.fixture(scope="session")
def ml100k(shared_data: Path) -> SequenceDataset:
    return load_dataset(DataSource(format="recbole", path=shared_data / "ml-100k"))


@pytest.fixture(scope="session")
def beauty(shared_data: Path) -> SequenceDataset:
    return load_dataset(DataSource(format="p5", path=shared_data / "amazon14-beauty"))


@pytest.fixture(scope="session")
def yelp(shared_data: Path) -> SequenceDataset:
    return load_dataset(DataSource(format="p5", path=shared_data / "yelp"))


def sizes(ds: SequenceDataset) -> tuple[int, int, int]:
    return ds.num_users, ds.num_items, ds.num_interactions


# --------------------------------------------------------------------------------- real data


def test_ml100k_sizes_text_and_time_order(ml100k: SequenceDataset, shared_data: Path) -> None:
    assert sizes(ml100k) == (943, 1682, 100000)
    assert (
        ml100k.item_texts[ml100k.item_ids.index("1")]
        == "Toy Story; 1995; Animation, Children's, Comedy"
    )
    inter = pd.read_csv(shared_data / "ml-100k" / "ml-100k.inter", sep="\t")
    user = inter[inter["user_id:token"] == 196].sort_values("timestamp:float", kind="stable")
    row = ml100k.user_ids.index("196")
    assert [ml100k.item_ids[i] for i in ml100k.sequence(row)] == user["item_id:token"].astype(
        str
    ).tolist()


def test_ml100k_min_rating(shared_data: Path) -> None:
    ds = load_dataset(DataSource(format="recbole", path=shared_data / "ml-100k", min_rating=4))
    assert ds.num_interactions == 55375  # ratings 4 and 5 of MovieLens 100K
    assert ds.num_items == 1682  # catalogue items keep their rows


def test_beauty_sequences_and_rich_text(beauty: SequenceDataset) -> None:
    assert sizes(beauty) == (22363, 12101, 198502)
    assert beauty.user_ids[0] == "A1YJEY40YUW4SE"
    np.testing.assert_array_equal(beauty.sequence(0), [0, 1, 2, 3, 4])  # "1 1 2 3 4 5"
    np.testing.assert_array_equal(beauty.sequence(1), [5, 6, 7, 8, 9, 3, 10])
    assert beauty.item_ids[0] == "B004756YJA"
    assert beauty.item_texts[0] == (
        "OPI Nail Lacquer, Simmer and Shimmer, 0.5-Fluid Ounce; OPI; "
        "Beauty > Makeup > Nails > Nail Polish"
    )


def test_beauty_text_overrides(shared_data: Path) -> None:
    folder = shared_data / "amazon14-beauty"
    phrases = load_dataset(
        DataSource(format="p5", path=folder, items_path=folder / "item_text_idgenrec.txt")
    )
    assert phrases.item_texts[phrases.item_ids.index("B000P24EI2")] == "rene furterer complexe 5"
    titles = load_dataset(DataSource(format="p5", path=folder, text_fields=["title"]))
    assert titles.item_texts[0] == "OPI Nail Lacquer, Simmer and Shimmer, 0.5-Fluid Ounce"


def test_sports(shared_data: Path) -> None:
    ds = load_dataset(DataSource(format="p5", path=shared_data / "amazon14-sports"))
    assert sizes(ds) == (35598, 18357, 296337)
    assert ds.user_ids[0] == "AIXZKN4ACSKI"
    assert ds.item_texts[ds.item_ids.index("B00307W7EW")] == "mudguard rear bicycle fender sports"


def test_yelp_keeps_repeats_and_uses_item_json(yelp: SequenceDataset) -> None:
    assert sizes(yelp) == (30431, 20033, 316354)
    np.testing.assert_array_equal(yelp.sequence(0)[:10], [0, 1, 2, 3, 2, 4, 5, 2, 6, 7])
    assert yelp.item_ids[0] == "5eV8oUGdBXylwB7HeaDFOA"
    assert yelp.item_texts[0] == "The Great Greek; Diners, Greek, Mediterranean, Restaurants"
    assert yelp.stats()["repeat_interactions"] > 0
    assert yelp.stats()["items_without_text"] == 0


def test_recbole_malformed_timestamp(shared_data: Path, tmp_path: Path) -> None:
    lines = (shared_data / "ml-100k" / "ml-100k.inter").read_text().splitlines()[:30]
    lines[16] = "\t".join([*lines[16].split("\t")[:3], "abc"])
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "ml-100k.inter").write_text("\n".join(lines) + "\n")
    with pytest.raises(
        ValueError, match=r"ml-100k.inter line 17: field timestamp:float: could not parse 'abc'"
    ):
        load_dataset(DataSource(format="recbole", path=folder))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("user_id:token\titem_id:token\n1\t2\n1\t3\t4\n", r"toy.inter.*line 3"),
        ("user_id\titem_id:token\n1\t2\n", r"toy.inter line 1: header 'user_id'"),
        (
            "user_id:token\titem_id:token\n1\t2\n\t3\n",
            r"toy.inter line 3: field user_id:token: empty value",
        ),
        ("", r"toy.inter: file is empty"),
    ],
)
def test_recbole_bad_rows_and_header(tmp_path: Path, content: str, message: str) -> None:
    folder = tmp_path / "toy"
    folder.mkdir()
    (folder / "toy.inter").write_text(content)
    with pytest.raises(ValueError, match=message):
        load_dataset(DataSource(format="recbole", path=folder))


# ------------------------------------------------------------------------------- canonical


def write_catalogue(path: Path) -> None:
    rows = [
        {"item_id": "i1", "title": "One", "brand": "B", "description": "first", "price": "1.5"},
        {"item_id": "i2", "title": "Two", "brand": "", "description": "second", "price": "2"},
        {
            "item_id": "cold",
            "title": "Cold",
            "brand": "C",
            "description": "never bought",
            "price": "",
        },
    ]
    frame = pd.DataFrame(rows)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_canonical_reader(tmp_path: Path, suffix: str, caplog: pytest.LogCaptureFixture) -> None:
    interactions = tmp_path / "log.csv"
    interactions.write_text(
        "user_id,item_id,timestamp\nu1,i2,30\nu2,i1,5\nu1,i1,10\nu1,x9,30\nu2,i2,1\n"
    )
    catalogue = tmp_path / f"items{suffix}"
    write_catalogue(catalogue)
    with caplog.at_level(logging.INFO):
        ds = load_dataset(DataSource(format="canonical", path=interactions, items_path=catalogue))
    assert ds.name == "log"
    assert ds.item_ids == ["i1", "i2", "cold", "x9"]  # catalogue order, then unknown items
    assert ds.item_texts == ["One; B; first", "Two; second", "Cold; C; never bought", ""]
    assert ds.user_ids == ["u1", "u2"]
    np.testing.assert_array_equal(
        ds.sequence(0), [0, 1, 3]
    )  # t=10, then the tie at 30 in file order
    np.testing.assert_array_equal(ds.sequence(1), [1, 0])
    assert "1 interactions on 1 items not in the catalogue" in caplog.text
    assert "1 catalogue items have no interactions" in caplog.text
    assert "1 of 4 items have no text" in caplog.text


def test_canonical_parquet_dates_no_timestamp_and_fields(tmp_path: Path) -> None:
    log = pd.DataFrame(
        {
            "user_id": [7, 7, 7],
            "item_id": ["a", "b", "c"],
            "timestamp": pd.to_datetime(["2020-01-03", "2020-01-01", "2020-01-02"]),
            "rating": [5.0, 1.0, 4.0],
        }
    )
    log.to_parquet(tmp_path / "log.parquet")
    ds = load_dataset(DataSource(format="canonical", path=tmp_path / "log.parquet", min_rating=4))
    assert ds.user_ids == ["7"]
    assert [ds.item_ids[i] for i in ds.sequence(0)] == ["c", "a"]
    log.drop(columns="timestamp").to_csv(tmp_path / "plain.csv", index=False)
    plain = load_dataset(DataSource(format="canonical", path=tmp_path / "plain.csv"))
    assert [plain.item_ids[i] for i in plain.sequence(0)] == ["a", "b", "c"]
    (tmp_path / "iso.csv").write_text(
        "user_id,item_id,timestamp\nu,a,2021-05-01T10:00:00Z\nu,b,2021-04-01\n"
    )
    iso = load_dataset(DataSource(format="canonical", path=tmp_path / "iso.csv"))
    assert [iso.item_ids[i] for i in iso.sequence(0)] == ["b", "a"]
    write_catalogue(tmp_path / "items.csv")
    (tmp_path / "i.csv").write_text("user_id,item_id\nu,i1\n")
    source = DataSource(
        format="canonical", path=tmp_path / "i.csv", items_path=tmp_path / "items.csv",
        text_fields=["description", "title"],
    )  # fmt: skip
    assert load_dataset(source).item_texts[0] == "first; One"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "user_id,item_id,timestamp\nu,a,1\nu,b,abc\n",
            r"log.csv line 3: field timestamp: could not parse 'abc'",
        ),
        (
            "user,item\nu,a\n",
            r"log.csv: missing column\(s\) \['user_id', 'item_id'\]; "
            r"columns found: \['user', 'item'\]",
        ),
        ("user_id,item_id\nu,a\n\n,b\n", r"log.csv line 4: field user_id: empty value"),
        ("user_id,item_id\n", r"log.csv: no data rows"),
        ("", r"log.csv: file is empty"),
        (
            "user_id,item_id,rating\nu,a,x\n",
            r"log.csv line 2: field rating: could not parse 'x' as float",
        ),
    ],
)
def test_canonical_malformed_interactions(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "log.csv").write_text(content)
    source = DataSource(
        format="canonical", path=tmp_path / "log.csv", min_rating=1 if "rating" in content else None
    )
    with pytest.raises(ValueError, match=message):
        load_dataset(source)


@pytest.mark.parametrize(
    ("name", "content", "text_fields", "message"),
    [
        (
            "items.jsonl",
            '{"item_id": "a", "title": "A"}\n{"item_id": \n',
            None,
            r"items.jsonl line 2: invalid JSON",
        ),
        (
            "items.csv",
            "item_id,title\na,A\na,B\n",
            None,
            r"items.csv line 3: field item_id: duplicate item_id 'a'",
        ),
        (
            "items.csv",
            "item_id,title\na,A\n",
            ["brand"],
            r"text field\(s\) \['brand'\] not found",
        ),
        ("items.xml", "<a/>", None, r"unsupported suffix '.xml'"),
    ],
)
def test_canonical_malformed_catalogue(
    tmp_path: Path, name: str, content: str, text_fields: list[str] | None, message: str
) -> None:
    (tmp_path / "log.csv").write_text("user_id,item_id\nu,a\n")
    (tmp_path / name).write_text(content)
    source = DataSource(
        format="canonical",
        path=tmp_path / "log.csv",
        items_path=tmp_path / name,
        text_fields=text_fields,
    )
    with pytest.raises(ValueError, match=message):
        load_dataset(source)


def test_min_rating_needs_rating_column(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text("user_id,item_id\nu,a\n")
    with pytest.raises(ValueError, match=r"min_rating=3.0 needs a 'rating' column"):
        load_dataset(DataSource(format="canonical", path=tmp_path / "log.csv", min_rating=3))


# ---------------------------------------------------------------------------------------- p5


def write_p5(folder: Path, lines: str, datamaps: dict[str, dict[str, str]] | None = None) -> None:
    folder.mkdir(exist_ok=True)
    (folder / "sequential.txt").write_text(lines)
    maps = datamaps or {
        "id2user": {"1": "alice", "2": "bob"},
        "id2item": {"1": "A", "2": "B", "3": "C"},
    }
    (folder / "datamaps.json").write_text(json.dumps(maps))


def test_p5_small_without_text(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_p5(tmp_path / "toy", "2 3 1 3\n1 2\n")
    with caplog.at_level(logging.WARNING):
        ds = load_dataset(DataSource(format="p5", path=tmp_path / "toy"))
    assert ds.user_ids == ["bob", "alice"]
    assert ds.item_ids == ["A", "B", "C"]
    np.testing.assert_array_equal(ds.sequence(0), [2, 0, 2])
    assert "3 of 3 items have no text" in caplog.text


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            "1 1 2\n2 1 x\n",
            r"sequential.txt line 2: field item_id \(position 2\): could not parse 'x' as int",
        ),
        ("1 1 2\n9 1\n", r"sequential.txt line 2: field user_id: user '9' is not in datamaps.json"),
        ("1 1 4\n", r"sequential.txt line 1: field item_id: ids must be in \[1, 3\]"),
        ("1 1\n1 2\n", r"line 2: field user_id: user '1' appears twice"),
        ("\n", r"sequential.txt: file is empty"),
    ],
)
def test_p5_malformed(tmp_path: Path, lines: str, message: str) -> None:
    write_p5(tmp_path / "toy", lines)
    with pytest.raises(ValueError, match=message):
        load_dataset(DataSource(format="p5", path=tmp_path / "toy"))


def test_p5_missing_files_and_options(tmp_path: Path) -> None:
    write_p5(tmp_path / "toy", "1 1\n", {"user2id": {"alice": "1"}})
    with pytest.raises(
        ValueError, match=r"datamaps.json: needs keys 'id2user' and 'id2item'; found \['user2id'\]"
    ):
        load_dataset(DataSource(format="p5", path=tmp_path / "toy"))
    with pytest.raises(ValueError, match=r"no sequential.txt or sequential_data.txt"):
        load_dataset(DataSource(format="p5", path=tmp_path))
    with pytest.raises(ValueError, match=r"format 'p5' does not support min_rating=3.0"):
        load_dataset(DataSource(format="p5", path=tmp_path / "toy", min_rating=3))


def test_data_source_is_strict() -> None:
    with pytest.raises(pydantic.ValidationError):
        DataSource(format="p5", path=Path("x"), item_path=Path("y"))  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError):
        DataSource(format="csv", path=Path("x"))  # type: ignore[arg-type]
    source = DataSource(format="p5", path=Path("x"))
    with pytest.raises(pydantic.ValidationError):
        source.name = "y"


# ------------------------------------------------------------------------------- dreamrec_df


def write_dreamrec(folder: Path, padding: str) -> None:
    """item_num 5 (pad id 5), seq_size 3; rows in the given padding."""
    folder.mkdir()
    rows: dict[str, list[tuple[list[int], int]]] = {
        "train": [([1, 2], 3), ([4], 0)],
        "val": [([0, 1, 2], 4)],
        "test": [([], 2)],
    }
    for part, samples in rows.items():
        seqs = [
            s + [5] * (3 - len(s)) if padding == "right" else [5] * (3 - len(s)) + s
            for s, _ in samples
        ]
        frame = pd.DataFrame(
            {"seq": seqs, "len_seq": [len(s) for s, _ in samples], "next": [n for _, n in samples]}
        )
        frame.to_pickle(folder / f"{part}_data.df")
    pd.DataFrame({"seq_size": [3], "item_num": [5]}).to_pickle(folder / "data_statis.df")


@pytest.mark.parametrize("padding", ["left", "right"])
def test_dreamrec_df(tmp_path: Path, padding: str) -> None:
    write_dreamrec(tmp_path / "atv", padding)
    ds = load_dataset(DataSource(format="dreamrec_df", path=tmp_path / "atv"))
    assert ds.user_ids == ["train:0", "train:1", "valid:0", "test:0"]
    assert ds.item_ids == ["0", "1", "2", "3", "4"]
    assert ds.item_texts == [""] * 5
    assert [ds.sequence(u).tolist() for u in range(4)] == [[1, 2, 3], [4, 0], [0, 1, 2, 4], [2]]


def test_dreamrec_df_malformed(tmp_path: Path) -> None:
    write_dreamrec(tmp_path / "atv", "right")
    pd.DataFrame({"seq": [[1, 5, 2]], "len_seq": [2], "next": [3]}).to_pickle(
        tmp_path / "atv" / "val_data.df"
    )
    with pytest.raises(
        ValueError, match=r"val_data.df row 0: field seq: pad id 5 is neither left nor right"
    ):
        load_dataset(DataSource(format="dreamrec_df", path=tmp_path / "atv"))
    pd.DataFrame({"seq": [[1, 2]], "len_seq": [2], "next": [3]}).to_pickle(
        tmp_path / "atv" / "val_data.df"
    )
    with pytest.raises(ValueError, match=r"val_data.df row 0: field seq: length 2 != seq_size 3"):
        load_dataset(DataSource(format="dreamrec_df", path=tmp_path / "atv"))
    pd.DataFrame({"seq": [[1, 2, 5]], "len_seq": [2], "next": [9]}).to_pickle(
        tmp_path / "atv" / "val_data.df"
    )
    with pytest.raises(ValueError, match=r"val_data.df row 0: field next: bad value 9"):
        load_dataset(DataSource(format="dreamrec_df", path=tmp_path / "atv"))
    (tmp_path / "atv" / "test_data.df").unlink()
    with pytest.raises(ValueError, match=r"missing \['test_data.df'\]"):
        load_dataset(DataSource(format="dreamrec_df", path=tmp_path / "atv"))


@pytest.mark.parametrize("padding", ["left", "right"])
def test_dreamrec_df_rows_of_only_padding(
    tmp_path: Path, padding: str, caplog: pytest.LogCaptureFixture
) -> None:
    """LLaRA's lastfm files give len_seq 1 to rows whose seq is only padding: users with only their next item."""
    write_dreamrec(tmp_path / "atv", padding)
    real = [1, 2, 5] if padding == "right" else [5, 1, 2]
    frame = pd.DataFrame(
        {
            "seq": [[5, 5, 5], real, [5, 5, 5], [5, 5, 5]],
            "len_seq": [1, 2, 3, 0],
            "next": [4, 3, 0, 1],
        }
    )
    frame.to_pickle(tmp_path / "atv" / "train_data.df")
    with caplog.at_level(logging.WARNING, logger="training.data.readers.dreamrec"):
        ds = load_dataset(DataSource(format="dreamrec_df", path=tmp_path / "atv"))
    assert ds.user_ids[:4] == ["train:0", "train:1", "train:2", "train:3"]
    assert [ds.sequence(u).tolist() for u in range(4)] == [[4], [1, 2, 3], [0], [1]]
    warnings = [r.getMessage() for r in caplog.records if r.name.endswith("readers.dreamrec")]
    assert len(warnings) == 1, warnings
    assert "train_data.df: 2 rows have a seq of only padding but len_seq > 0" in warnings[0]


def test_dreamrec_df_padding_errors_remain(tmp_path: Path) -> None:
    """Only rows of nothing but padding are forgiven: a len_seq that disagrees with real items still stops."""
    write_dreamrec(tmp_path / "atv", "right")
    for seq, len_seq, message in [
        (
            [1, 5, 5],
            2,
            r"row 1: field seq: pad id 5 is neither left nor right padding with len_seq=2",
        ),
        (
            [1, 2, 5],
            0,
            r"row 1: field seq: pad id 5 is neither left nor right padding with len_seq=0",
        ),
        ([5, 5, 5], 4, r"row 1: field len_seq: bad value 4"),
        ([5, 5, 5], -1, r"row 1: field len_seq: bad value -1"),
        ([5, 5, 6], 1, r"row 1: field seq: bad value \[5, 5, 6\]"),
    ]:
        frame = pd.DataFrame({"seq": [[5, 5, 5], seq], "len_seq": [1, len_seq], "next": [0, 1]})
        frame.to_pickle(tmp_path / "atv" / "test_data.df")
        with pytest.raises(ValueError, match=rf"test_data.df {message}"):
            load_dataset(DataSource(format="dreamrec_df", path=tmp_path / "atv"))
