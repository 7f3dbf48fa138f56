"""Digest parsing and normalisation, blob file names, and streaming hashes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from corral.errors import InvalidDigestError
from corral.store.digest import (
    DIGEST_RE,
    Hasher,
    blob_filename,
    digest_from_filename,
    parse_digest,
    sha256_file,
)

HEX = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        (f"sha256:{HEX}", f"sha256:{HEX}"),
        (f"sha256-{HEX}", f"sha256:{HEX}"),
        (f"sha256:{HEX.upper()}", f"sha256:{HEX}"),
    ],
)
def test_parse_valid(raw: str, normal: str) -> None:
    assert DIGEST_RE.fullmatch(raw)
    assert parse_digest(raw) == normal


@pytest.mark.parametrize(
    "raw",
    [
        "",
        HEX,
        f"sha256:{HEX[:-1]}",
        f"sha256:{HEX}0",
        f"sha256:{HEX}\n",
        f"sha256_{HEX}",
        f"SHA256:{HEX}",
        f"sha512:{HEX}",
        f"sha256:{HEX[:-1]}g",
        f"sha256:../{HEX[3:]}",
        f" sha256:{HEX}",
    ],
)
def test_parse_invalid(raw: str) -> None:
    with pytest.raises(InvalidDigestError, match="invalid digest format"):
        parse_digest(raw)


def test_blob_filename_round_trip() -> None:
    assert blob_filename(f"sha256:{HEX.upper()}") == f"sha256-{HEX}"
    assert digest_from_filename(f"sha256-{HEX}") == f"sha256:{HEX}"
    with pytest.raises(InvalidDigestError):
        blob_filename("nope")


@pytest.mark.parametrize(
    "name",
    [f"sha256-{HEX}-partial", f"sha256-{HEX.upper()}", f"sha256:{HEX}", ".tmp-x", "x"],
)
def test_not_blob_filenames(name: str) -> None:
    assert digest_from_filename(name) is None


def test_hashing(tmp_path: Path) -> None:
    data = b"hello" * 500_000  # spans several 1 MiB chunks
    path = tmp_path / "f"
    path.write_bytes(data)
    expected = "sha256:" + hashlib.sha256(data).hexdigest()
    assert sha256_file(path) == expected
    hasher = Hasher()
    hasher.update(data[:7])
    hasher.update(data[7:])
    assert hasher.digest == expected
    assert hasher.hexdigest == expected.removeprefix("sha256:")
    assert hasher.size == len(data)
