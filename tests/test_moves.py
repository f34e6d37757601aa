"""Moves that never overwrite, finished from whatever state a crash left them in."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from syncd.files import Place, Vanished, locate
from syncd.work.moves import PARTIAL_SUFFIX, Taken, carry, free_name, make_folders


def at(path: Path) -> Place:
    """`path`'s folder, opened as the after-upload actions open it (files.locate)."""
    return locate(path.parent, path)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_free_name_numbers_before_the_suffix(tmp_path):
    write(tmp_path / "a.tar.gz", b"")
    write(tmp_path / "a.tar (1).gz.syncd.toml", b"")  # a sidecar alone takes the name too
    write(tmp_path / "README", b"")
    assert free_name(tmp_path, "a.tar.gz") == tmp_path / "a.tar (2).gz"
    assert free_name(tmp_path, "README") == tmp_path / "README (1)"
    assert free_name(tmp_path, "new.txt") == tmp_path / "new.txt"
    assert free_name(tmp_path, "new.txt", {"new.txt"}) == tmp_path / "new (1).txt"


def test_carry_moves_and_never_overwrites(tmp_path):
    source = write(tmp_path / "in" / "f.bin", b"mine")
    taken = write(tmp_path / "out" / "f.bin", b"theirs")
    with at(source) as here, at(taken) as there, pytest.raises(Taken):
        carry(here, there)
    assert source.read_bytes() == b"mine" and taken.read_bytes() == b"theirs"
    target = tmp_path / "out" / "g.bin"
    with at(source) as here, at(target) as there:
        assert carry(here, there, hashlib.sha256(b"mine").hexdigest())
        assert target.read_bytes() == b"mine" and not source.exists()
        assert carry(here, there)  # again, as after a crash before the journal heard of it
    with at(tmp_path / "nowhere") as here, at(tmp_path / "neither") as there:
        assert not carry(here, there)


def test_carry_finishes_a_link_then_unlink_cut_short(tmp_path):
    source = write(tmp_path / "f.bin", b"data")
    target = tmp_path / "g.bin"
    os.link(source, target)
    with at(source) as here, at(target) as there:
        assert carry(here, there)
    assert not source.exists() and target.read_bytes() == b"data"


def test_carry_finishes_a_verified_copy_whose_source_was_not_removed(tmp_path):
    source = write(tmp_path / "a" / "f.bin", b"same bytes")
    target = write(tmp_path / "b" / "f.bin", b"same bytes")
    write(tmp_path / "b" / f".f.bin{PARTIAL_SUFFIX}", b"same")
    with at(source) as here, at(target) as there:
        assert carry(here, there, hashlib.sha256(b"same bytes").hexdigest())
    assert not source.exists() and target.read_bytes() == b"same bytes"
    assert not (tmp_path / "b" / f".f.bin{PARTIAL_SUFFIX}").exists()


def test_make_folders_refuses_a_symlink_on_the_way(tmp_path):
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / "link").symlink_to(elsewhere)
    with pytest.raises(OSError, match="symlink"):
        make_folders(root / "link" / "deeper", root)
    assert list(elsewhere.iterdir()) == []
    make_folders(root / "x" / "y", root)
    assert (root / "x" / "y").is_dir()


def test_carry_never_follows_a_folder_swapped_for_a_symlink(tmp_path):
    """The ends are folders opened beforehand: a swap after that moves nothing from outside."""
    root, outside = tmp_path / "watch", tmp_path / "outside"
    write(root / "sub" / "f.bin", b"ours")
    write(outside / "f.bin", b"not ours")
    target = tmp_path / "archive" / "f.bin"
    target.parent.mkdir()
    with locate(root, root / "sub" / "f.bin") as here, at(target) as there:
        (root / "sub").rename(root / "moved-away")
        (root / "sub").symlink_to(outside)
        assert carry(here, there)
    assert target.read_bytes() == b"ours"
    assert (outside / "f.bin").read_bytes() == b"not ours"
    with pytest.raises(Vanished):
        locate(root, root / "sub" / "f.bin")


def test_carry_across_file_systems_copies_verifies_then_removes(tmp_path, other_fs):
    data = os.urandom(3 * 1024 * 1024 + 5)
    source = write(tmp_path / "f.bin", data)
    mtime = source.stat().st_mtime_ns
    target = other_fs / "f.bin"
    with at(source) as here, at(target) as there:
        with pytest.raises(OSError, match="does not read back"):
            carry(here, there, hashlib.sha256(b"other content").hexdigest())
        assert source.read_bytes() == data and not target.exists()
        assert list(other_fs.iterdir()) == []
        assert carry(here, there, hashlib.sha256(data).hexdigest())
    assert target.read_bytes() == data and not source.exists()
    assert target.stat().st_mtime_ns == mtime
