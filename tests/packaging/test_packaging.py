"""Code packages: deterministic builds, ignore rules, and hand-made malicious zips."""

from __future__ import annotations

import io
import os
import stat
import warnings
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aitb.packaging import (
    PackageError,
    build_package,
    digest_of,
    extract_package,
    validate_package,
)


def make_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def names(data: bytes) -> list[str]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return zf.namelist()


def raw_zip(entries: list[tuple[str, bytes, int | None]]) -> bytes:
    """A zip with entries written exactly as given: (name, content, unix mode or None)."""
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w") as zf:
        warnings.simplefilter("ignore")  # duplicate names are made on purpose
        for name, content, mode in entries:
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.create_system = 3
                info.external_attr = mode << 16
            zf.writestr(info, content)
    return buf.getvalue()


LINK = stat.S_IFLNK | 0o777
FILE = stat.S_IFREG | 0o644


# ---------------------------------------------------------------- build


def test_same_tree_gives_same_digest_regardless_of_mtime(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "a", {"train.py": "print(1)\n", "lib/util.py": "x = 1\n"})
    first = build_package(tree)
    os.utime(tree / "train.py", (1_000_000, 1_000_000))
    second = build_package(tree)
    assert first.data == second.data
    assert first.digest == second.digest == digest_of(first.data)
    assert first.digest.startswith("sha256:") and len(first.digest) == 7 + 64
    assert first.files == 2
    (tree / "train.py").write_text("print(2)\n")
    assert build_package(tree).digest != first.digest


def test_entries_are_sorted_and_carry_fixed_timestamps(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, {"b.py": "", "a/z.py": "", "a/b.py": ""})
    data = build_package(tree).data
    assert names(data) == ["a/b.py", "a/z.py", "b.py"]
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_gitignore_aitbignore_and_always_excluded_dirs(tmp_path: Path) -> None:
    tree = make_tree(
        tmp_path,
        {
            "train.py": "",
            ".gitignore": "*.log\ndata/\n!keep.log\n",
            ".aitbignore": "secrets.txt\n",
            "run.log": "",
            "keep.log": "",
            "data/big.bin": "",
            "secrets.txt": "",
            "src/.gitignore": "generated.py\n",
            "src/generated.py": "",
            "src/model.py": "",
            ".git/config": "",
            "pkg/__pycache__/m.pyc": "",
            ".venv/bin/python": "",
        },
    )
    got = set(names(build_package(tree).data))
    assert got == {".gitignore", ".aitbignore", "train.py", "keep.log", "src/.gitignore", "src/model.py"}


def test_executable_bit_is_kept(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, {"run.sh": "#!/bin/sh\n", "lib.py": ""})
    (tree / "run.sh").chmod(0o755)
    with zipfile.ZipFile(io.BytesIO(build_package(tree).data)) as zf:
        assert (zf.getinfo("run.sh").external_attr >> 16) & 0o777 == 0o755
        assert (zf.getinfo("lib.py").external_attr >> 16) & 0o777 == 0o644


def test_symlink_inside_tree_is_kept_as_link(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "t", {"conf/real.yaml": "a: 1\n"})
    (tree / "link.yaml").symlink_to("conf/real.yaml")
    (tree / "confdir").symlink_to(tree / "conf")  # absolute but inside: stored relative
    data = build_package(tree).data
    out = tmp_path / "out"
    extract_package(data, out)
    assert (out / "link.yaml").read_text() == "a: 1\n"
    assert os.readlink(out / "confdir") == "conf"
    assert (out / "confdir" / "real.yaml").read_text() == "a: 1\n"


def test_symlink_leaving_the_tree_is_refused(tmp_path: Path) -> None:
    outside = make_tree(tmp_path / "outside", {"secret": "x"})
    tree = make_tree(tmp_path / "t", {"train.py": ""})
    (tree / "leak").symlink_to(outside / "secret")
    with pytest.raises(PackageError, match="leak points outside"):
        build_package(tree)
    (tree / ".aitbignore").write_text("leak\n")
    assert "leak" not in names(build_package(tree).data)


def test_oversized_tree_names_the_largest_file(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, {"train.py": ""})
    (tree / "weights.bin").write_bytes(os.urandom(64 * 1024))
    with pytest.raises(PackageError, match=r"weights\.bin.*\.aitbignore"):
        build_package(tree, max_bytes=16 * 1024)


def test_built_package_validates_and_roundtrips(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "t", {"a.py": "A", "d/e/f.txt": "F"})
    build = build_package(tree)
    info = validate_package(build.data, max_bytes=1 << 20, max_files=10)
    assert (info.digest, info.size, info.files, info.uncompressed) == (build.digest, len(build.data), 2, 2)
    extract_package(build.data, tmp_path / "x")
    assert (tmp_path / "x/d/e/f.txt").read_text() == "F"


# ---------------------------------------------------------------- malicious zips


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("/etc/passwd", "absolute"),
        ("../evil.py", r"'\.\.'"),
        ("a/../../evil.py", r"'\.\.'"),
        ("a/./b.py", "'.'"),
        ("a//b.py", "empty"),
        ("..\\evil.py", "backslash"),
        ("a\\..\\..\\evil.py", "backslash"),
        ("C:/windows/evil.py", "absolute"),
        ("bad\x01name", "control"),
    ],
)
def test_unsafe_entry_names_are_rejected(name: str, message: str) -> None:
    data = raw_zip([(name, b"x", None)])
    with pytest.raises(PackageError, match=message):
        validate_package(data, max_bytes=1 << 20, max_files=10)


@pytest.mark.parametrize(
    "entries",
    [
        [("up", b"..", LINK)],
        [("abs", b"/etc", LINK)],
        [("d/up", b"../..", LINK)],
        # each link alone looks harmless; chained they climb out
        [("x", b".", LINK), ("y", b"x/x/x/..", LINK), ("z", b"y/..", LINK)],
        [("a", b"b/c/d", LINK), ("b/c/z", b"../../../..", LINK)],
        [("loop1", b"loop2", LINK), ("loop2", b"loop1", LINK)],
    ],
)
def test_links_leaving_the_tree_are_rejected(entries: list[tuple[str, bytes, int]]) -> None:
    with pytest.raises(PackageError, match="outside|loop"):
        validate_package(raw_zip(entries), max_bytes=1 << 20, max_files=10)


def test_entry_written_through_a_link_is_rejected(tmp_path: Path) -> None:
    data = raw_zip([("sub", b"inner", LINK), ("inner/ok", b"", FILE), ("sub/evil", b"x", FILE)])
    with pytest.raises(PackageError, match="passes through a link"):
        extract_package(data, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_device_entries_duplicates_and_encryption_are_rejected() -> None:
    with pytest.raises(PackageError, match="device"):
        validate_package(raw_zip([("fifo", b"", stat.S_IFIFO | 0o644)]), 1 << 20, 10)
    with pytest.raises(PackageError, match="twice"):
        validate_package(raw_zip([("a.py", b"1", None), ("a.py", b"2", None)]), 1 << 20, 10)
    data = bytearray(raw_zip([("a.py", b"1", None)]))
    # set the "encrypted" flag bit in the local header and the central directory
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):
        at = data.find(sig)
        flag_at = at + (6 if sig == b"PK\x03\x04" else 8)
        data[flag_at] |= 0x1
    with pytest.raises(PackageError, match="encrypted"):
        validate_package(bytes(data), 1 << 20, 10)


def test_not_a_zip_too_large_and_too_many_files() -> None:
    with pytest.raises(PackageError, match="not a valid zip"):
        validate_package(b"this is not a zip file", 1 << 20, 10)
    with pytest.raises(PackageError, match="not a valid zip"):
        validate_package(raw_zip([("a.py", b"x" * 100, None)])[:-30], 1 << 20, 10)
    with pytest.raises(PackageError, match="over the"):
        validate_package(raw_zip([("a.py", b"x" * 5000, None)]), max_bytes=1000, max_files=10)
    many = raw_zip([(f"f{i}.py", b"", None) for i in range(11)])
    with pytest.raises(PackageError, match="11 entries, more than the limit of 10"):
        validate_package(many, 1 << 20, 10)


def test_zip_bomb_is_rejected_by_declared_size() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb.bin", b"\0" * (20 * 1024 * 1024))
    data = buf.getvalue()
    assert len(data) < 100 * 1024
    with pytest.raises(PackageError, match="uncompressed limit"):
        validate_package(data, max_bytes=1 << 20, max_files=10)


def test_zip_bomb_lying_about_its_size_is_caught_while_reading() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb.bin", b"\0" * (4 * 1024 * 1024))
    data = bytearray(buf.getvalue())
    # rewrite the declared uncompressed size (local header and central directory) to 10 bytes
    local = data.find(b"PK\x03\x04")
    data[local + 22 : local + 26] = (10).to_bytes(4, "little")
    central = data.find(b"PK\x01\x02")
    data[central + 24 : central + 28] = (10).to_bytes(4, "little")
    with pytest.raises(PackageError):
        validate_package(bytes(data), max_bytes=1 << 20, max_files=10, max_uncompressed=1 << 20)


def test_extract_refuses_a_non_empty_destination(tmp_path: Path) -> None:
    (tmp_path / "existing").write_text("")
    with pytest.raises(PackageError, match="not empty"):
        extract_package(raw_zip([("a.py", b"", None)]), tmp_path)


# ---------------------------------------------------------------- properties

_part = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-é", min_size=1, max_size=8).filter(
    lambda p: p not in (".", "..")
)
_trees = st.dictionaries(
    st.lists(_part, min_size=1, max_size=3).map("/".join), st.binary(max_size=200), min_size=1, max_size=12
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=_trees)
def test_any_tree_roundtrips_exactly(tmp_path_factory: pytest.TempPathFactory, tree: dict[str, bytes]) -> None:
    """Build -> validate -> extract gives back the same files, and rebuilding gives the same digest."""
    paths = sorted(tree)
    # a path cannot be both a file and a directory
    tree = {p: tree[p] for p in paths if not any(q.startswith(p + "/") for q in paths)}
    src = tmp_path_factory.mktemp("src")
    for rel, content in tree.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(content)
    build = build_package(src)
    info = validate_package(build.data, 1 << 20, 100)
    assert info.files == build.files == len(tree)
    out = tmp_path_factory.mktemp("out")
    extract_package(build.data, out / "x")
    got = {p.relative_to(out / "x").as_posix(): p.read_bytes() for p in (out / "x").rglob("*") if p.is_file()}
    assert got == tree
    assert build_package(out / "x").digest == build.digest
