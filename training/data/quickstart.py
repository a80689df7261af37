"""Quick-start data for a fresh machine: MovieLens-100K in RecBole atomic format.

Owns locating, verifying and obtaining ``ml-100k.{inter,item,user}``. The files are taken from the
PyPI wheel ``recbole==1.2.1`` (``recbole/dataset_example/ml-100k/``), fetched with ``pip download``
and checked against pinned sha256 sums, and kept in a cache folder outside the repository. A copy
that already exists ($RECSYS_ML100K_DIR or any folder passed to ``find_ml100k``) is verified and
used without downloading.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

logger = logging.getLogger(__name__)

RECBOLE_REQUIREMENT = "recbole==1.2.1"
WHEEL_DATA_PREFIX = "recbole/dataset_example/ml-100k/"
ML100K_SHA256: dict[str, str] = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
}
_PIP_HINT = (
    "Hint: this needs access to a Python package index; on an offline machine copy the three "
    "ml-100k files into a folder and set RECSYS_ML100K_DIR to it."
)


def default_data_cache_dir() -> Path:
    """$RECSYS_CACHE_DIR/data, else ~/.cache/recsys/data (outside the repository)."""
    root = os.environ.get("RECSYS_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "recsys"
    return base / "data"


def verify_ml100k(folder: Path) -> Path:
    """Check that folder holds the three ml-100k files with the pinned sha256 sums.

    Returns:
        folder, unchanged.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: a file's sha256 differs; the message names the file and both sums.
    """
    for name, expected in ML100K_SHA256.items():
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"ml-100k file {path} is missing")
        with path.open("rb") as handle:
            actual = hashlib.file_digest(handle, "sha256").hexdigest()
        _check_sum(str(path), actual, expected)
    return folder


def find_ml100k(candidates: list[Path]) -> Path | None:
    """The first candidate folder that holds all three ml-100k files, after verifying them.

    Folders that do not exist or lack a file are skipped.

    Args:
        candidates: folders to try in order, e.g. ``[Path("../shared/data/ml-100k")]``.

    Returns:
        The verified folder, or None when no candidate holds the files.

    Raises:
        ValueError: a candidate holds the files but one differs from the pinned sum.
    """
    for folder in candidates:
        if all((folder / name).is_file() for name in ML100K_SHA256):
            logger.info("Using ml-100k at %s", folder)
            return verify_ml100k(folder)
        logger.debug("No complete ml-100k at %s", folder)
    return None


def ensure_ml100k(cache_dir: Path | None = None) -> Path:
    """A folder holding verified ml-100k.inter, ml-100k.item and ml-100k.user.

    Order: $RECSYS_ML100K_DIR (verified, never replaced), then ``cache_dir/ml-100k``, else the
    files are extracted from the ``recbole==1.2.1`` wheel into ``cache_dir/ml-100k``.

    Args:
        cache_dir: cache root; None means $RECSYS_CACHE_DIR/data or ~/.cache/recsys/data.

    Returns:
        The folder holding the three files.

    Raises:
        RuntimeError: pip could not download the wheel.
        ValueError: a file differs from its pinned sha256.
    """
    env_dir = os.environ.get("RECSYS_ML100K_DIR")
    if env_dir:
        found = find_ml100k([Path(env_dir)])
        if found is None:
            raise FileNotFoundError(f"RECSYS_ML100K_DIR={env_dir} lacks {list(ML100K_SHA256)}")
        return found
    target = (cache_dir or default_data_cache_dir()) / "ml-100k"
    if _is_valid(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".ml-100k-") as tmp:
        staging = Path(tmp) / "ml-100k"
        _extract_from_wheel(_download_wheel(Path(tmp) / "wheel"), staging)
        _publish(staging, target)
    logger.info("ml-100k ready at %s", target)
    return target


def _check_sum(name: str, actual: str, expected: str) -> None:
    if actual != expected:
        raise ValueError(f"sha256 mismatch for {name}: expected {expected}, got {actual}")


def _is_valid(folder: Path) -> bool:
    """True when folder holds the verified files; a corrupt copy is logged and reported False."""
    if not folder.is_dir():
        return False
    try:
        verify_ml100k(folder)
    except (FileNotFoundError, ValueError) as exc:
        logger.warning("Replacing the cached ml-100k at %s: %s", folder, exc)
        return False
    return True


def _download_wheel(dest: Path) -> Path:
    """pip-download the recbole wheel (no dependencies) into dest and return its path."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        RECBOLE_REQUIREMENT,
        "-d",
        str(dest),
    ]
    logger.info("Downloading %s to extract ml-100k: %s", RECBOLE_REQUIREMENT, " ".join(cmd))
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or "")[-2000:]
        raise RuntimeError(
            f"pip download {RECBOLE_REQUIREMENT} failed with exit code {exc.returncode}:\n"
            f"{tail}\n{_PIP_HINT}"
        ) from exc
    wheels = sorted(dest.glob("recbole-*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one recbole wheel in {dest}, found {wheels}. {_PIP_HINT}")
    return wheels[0]


def _extract_from_wheel(wheel: Path, staging: Path) -> None:
    """Copy the three ml-100k members of the wheel into staging, verifying each sum first."""
    staging.mkdir(parents=True)
    with zipfile.ZipFile(wheel) as archive:
        for name, expected in ML100K_SHA256.items():
            member = WHEEL_DATA_PREFIX + name
            try:
                payload = archive.read(member)
            except KeyError as exc:
                raise ValueError(f"{wheel.name} has no member {member}") from exc
            _check_sum(f"{member} in {wheel.name}", hashlib.sha256(payload).hexdigest(), expected)
            (staging / name).write_bytes(payload)


def _publish(staging: Path, target: Path) -> None:
    """Move the verified staging folder into place; a stale target is removed first."""
    if target.exists():
        shutil.rmtree(target)
    try:
        staging.rename(target)
    except OSError:
        if not _is_valid(target):
            raise
        logger.info("Another process published ml-100k at %s first", target)
