"""Experiment configs: every shipped TOML validates; overrides; unknown keys are errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.config import load_config, parse_override

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "training" / "configs").glob("*.toml"))


def test_configs_exist_for_every_dataset() -> None:
    names = {p.stem for p in CONFIGS}
    assert {"ml-100k", "amazon14-beauty", "amazon14-sports", "yelp"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_validate(path: Path) -> None:
    config = load_config(path)
    assert config.name == path.stem
    assert config.embedding.dim >= (config.embedding.null_dim or 0)


def test_overrides_are_toml_literals() -> None:
    assert parse_override("train.lr=1e-3") == (["train", "lr"], 0.001)
    assert parse_override('embedding.mode="id"') == (["embedding", "mode"], "id")
    assert parse_override("embedding.mode=id") == (["embedding", "mode"], "id")
    config = load_config(CONFIGS[0], ["train.lr=0.5", "embedding.null_dim=32"])
    assert (config.train.lr, config.embedding.null_dim) == (0.5, 32)


def test_unknown_keys_and_bad_values_fail_with_the_file_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nope"):
        load_config(CONFIGS[0], ["train.nope=1"])
    with pytest.raises(ValueError, match="lr"):
        load_config(CONFIGS[0], ["train.lr=-1"])
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(ValueError, match=r"bad\.toml: invalid TOML"):
        load_config(bad)
    with pytest.raises(ValueError, match=r"section\.key=value"):
        parse_override("novalue")
    with pytest.raises(ValueError, match="id_dropout applies to mode 'alphafuse' only"):
        load_config(CONFIGS[0], ['embedding.mode="id"', "embedding.id_dropout=0.2"])
    with pytest.raises(
        ValueError, match=r"protocol='given' needs data\.source\.format='dreamrec_df'"
    ):
        load_config(CONFIGS[0], ['data.protocol="given"'])


def test_null_threshold_without_null_dim_replaces_the_default(tmp_path: Path) -> None:
    """TOML has no null: a section that sets only null_threshold gets null_dim=None, both set is an error."""
    base = 'name = "x"\n[data]\nsource = { format = "recbole", path = "." }\n[embedding]\n'
    path = tmp_path / "x.toml"
    path.write_text(base + "null_threshold = 0.25\n")
    emb = load_config(path).embedding
    assert (emb.null_dim, emb.null_threshold) == (None, 0.25)
    emb = load_config(path, ["embedding.null_threshold=none", "embedding.null_dim=64"]).embedding
    assert (emb.null_dim, emb.null_threshold) == (64, None)
    with pytest.raises(ValueError, match=r"train\.lr"):
        load_config(path, ["train.lr=none"])
    path.write_text(base + "null_threshold = 0.25\nnull_dim = 8\n")
    with pytest.raises(ValueError, match="exactly one of null_dim or null_threshold"):
        load_config(path)
