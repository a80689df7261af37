"""The artifact contract: a manifest is written only over files that match it, and read back only if they still do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.artifact import (
    SCHEMA_VERSION,
    ArtifactError,
    Dims,
    EncoderSpec,
    IndexSpec,
    Manifest,
    open_artifact,
    resolve_artifact,
    sha256_file,
    write_current,
    write_manifest,
)
from core.item_text import compose_item_text

FILES = ["encoder.onnx", "items.faiss", "items.npy", "item_ids.json", "popularity.npy"]


def _artifact(root: Path, version: str = "v1") -> tuple[Path, Manifest]:
    directory = root / version
    directory.mkdir(parents=True)
    for name in FILES:
        (directory / name).write_bytes(name.encode())
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        version=version,
        created="2026-11-23T00:00:00Z",
        model_kind="sasrec",
        embedding_mode="id",
        dims=Dims(d=8, d_s=8, d_n=0),
        num_items=3,
        encoder=EncoderSpec(max_len=5, parity_max_abs_diff=1e-7),
        index=IndexSpec(kind="flat", recall_at_10=1.0),
        basis_file=None,
        files={name: sha256_file(directory / name) for name in FILES},
    )
    write_manifest(directory, manifest)
    return directory, manifest


def test_round_trip_and_current_pointer(tmp_path: Path) -> None:
    directory, manifest = _artifact(tmp_path)
    assert open_artifact(directory) == manifest
    assert not manifest.supports_text
    write_current(tmp_path, "v1")
    assert resolve_artifact(tmp_path) == directory
    assert resolve_artifact(directory) == directory
    with pytest.raises(ArtifactError, match="not a complete artifact"):
        write_current(tmp_path, "v2")


def test_tampered_missing_or_unknown_schema_is_refused(tmp_path: Path) -> None:
    directory, _ = _artifact(tmp_path)
    (directory / "items.npy").write_bytes(b"changed")
    with pytest.raises(ArtifactError, match=r"items.npy: sha256 .* does not match"):
        open_artifact(directory)
    (directory / "items.npy").unlink()
    with pytest.raises(ArtifactError, match=r"missing file items\.npy"):
        open_artifact(directory)
    raw = json.loads((directory / "manifest.json").read_text())
    raw["schema_version"] = 99
    (directory / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="schema_version 99"):
        open_artifact(directory)
    with pytest.raises(ArtifactError, match=r"no manifest\.json"):
        open_artifact(tmp_path / "nothing")


def test_a_manifest_must_cover_every_required_file(tmp_path: Path) -> None:
    directory, manifest = _artifact(tmp_path)
    files = dict(manifest.files)
    del files["encoder.onnx"]
    with pytest.raises(ArtifactError, match="no checksum for"):
        write_manifest(directory, manifest.model_copy(update={"files": files}))
    escaping = {**manifest.files, "../x": "0" * 64}
    with pytest.raises(ArtifactError, match="escapes"):
        write_manifest(directory, manifest.model_copy(update={"files": escaping}))


def test_item_text_rule() -> None:
    assert compose_item_text(["Lip Gloss", ["Beauty", "Makeup"], None, float("nan"), " "]) == (
        "Lip Gloss; Beauty, Makeup"
    )
    assert compose_item_text([]) == ""


def _rewrite_manifest(directory: Path, **changes: object) -> None:
    raw = json.loads((directory / "manifest.json").read_text())
    raw.update(changes)
    (directory / "manifest.json").write_text(json.dumps(raw))


@pytest.mark.parametrize(
    "name", ["../outside/secret.npy", "sub/../../outside/secret.npy", "{outside}/secret.npy"]
)
def test_no_manifest_file_name_reaches_outside_the_artifact(tmp_path: Path, name: str) -> None:
    """A hostile manifest naming a file outside its directory (with that file's true checksum) is refused."""
    directory, manifest = _artifact(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.npy").write_bytes(b"secret")
    name = name.format(outside=outside)  # the absolute case
    files = {**manifest.files, name: sha256_file(outside / "secret.npy")}
    _rewrite_manifest(directory, items_file=name, files=files)
    with pytest.raises(ArtifactError, match="escapes the artifact"):
        open_artifact(directory)
    # the text encoder's directory is joined to its file names: the same rule holds
    text = {"name": "m", "directory": str(outside), "max_length": 8, "dim": 4}
    te_files = {
        **manifest.files,
        f"{outside}/model.onnx": "0" * 64,
        f"{outside}/tokenizer.json": "0" * 64,
    }
    _rewrite_manifest(directory, items_file="items.npy", text_encoder=text, files=te_files)
    with pytest.raises(ArtifactError, match="escapes the artifact"):
        open_artifact(directory)


def test_a_symbolic_link_out_of_the_artifact_is_refused(tmp_path: Path) -> None:
    directory, _ = _artifact(tmp_path)
    secret = tmp_path / "secret"
    secret.write_bytes(b"items.npy")  # the same bytes, so the checksum alone would pass
    (directory / "items.npy").unlink()
    (directory / "items.npy").symlink_to(secret)
    with pytest.raises(ArtifactError, match=r"'items\.npy' links outside the artifact"):
        open_artifact(directory)
    # a link inside the directory is fine
    (directory / "items.npy").unlink()
    (directory / "copy").write_bytes(b"items.npy")
    (directory / "items.npy").symlink_to(directory / "copy")
    open_artifact(directory)


@pytest.mark.parametrize("version", ["../v1", "/tmp", ".hidden", ""])
def test_current_must_name_a_version_inside_the_root(tmp_path: Path, version: str) -> None:
    _artifact(tmp_path / "root")
    (tmp_path / "root" / "CURRENT").write_text(version + "\n")
    with pytest.raises(ArtifactError, match="invalid version"):
        resolve_artifact(tmp_path / "root")


def test_a_manifest_missing_a_field_is_refused(tmp_path: Path) -> None:
    directory, _ = _artifact(tmp_path)
    raw = json.loads((directory / "manifest.json").read_text())
    del raw["encoder"]
    (directory / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match=r"(?s)invalid manifest: .*encoder\s+Field required"):
        open_artifact(directory)
