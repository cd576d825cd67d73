"""Code packages: the zip of a working directory that travels with a job.

Shared by the CLI (``build_package``) and the server (``validate_package``,
``extract_package``). A package is content-addressed by the sha256 of its bytes,
so the zip is deterministic: sorted entries, fixed timestamps and modes, the same
tree always gives the same digest and the CLI can skip re-uploads.

A package is untrusted input on the server. Validation rejects anything that
could write outside the extraction directory (absolute paths, ``..``,
backslashes, drive letters, links whose target leaves the tree, paths that pass
through a link) and anything that could exhaust the disk (zip bombs, too many
files). Symbolic links are resolved in memory against the package's own links,
so chains of links cannot climb out either.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MAX_BYTES = 100 * 1024 * 1024
DEFAULT_MAX_FILES = 20_000
#: Uncompressed size allowed per compressed byte allowed (zip-bomb guard).
UNCOMPRESSED_FACTOR = 10
IGNORE_FILES = (".gitignore", ".aitbignore")
ALWAYS_EXCLUDED_DIRS = frozenset({".git", "__pycache__", ".venv"})
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_MAX_LINK_TARGET = 1024
_MAX_LINK_HOPS = 40
_CHUNK = 1 << 16


class PackageError(ValueError):
    """A package that cannot be built or must not be accepted; the message says why."""


@dataclass(frozen=True)
class PackageBuild:
    data: bytes
    digest: str
    files: int


@dataclass(frozen=True)
class PackageInfo:
    digest: str
    size: int
    files: int
    uncompressed: int


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- building


class _IgnoreRules:
    """``.gitignore``/``.aitbignore`` files found while walking, deepest last.

    A pattern file applies to paths below its own directory; the deepest file
    with a matching pattern decides, as in git.
    """

    def __init__(self) -> None:
        self._specs: list[tuple[str, object]] = []

    def load(self, root: Path, rel_dir: str) -> None:
        import pathspec  # imported here: only packaging needs it

        lines: list[str] = []
        for name in IGNORE_FILES:
            path = root / rel_dir / name
            if path.is_file() and not path.is_symlink():
                lines += path.read_text(encoding="utf-8", errors="replace").splitlines()
        if lines:
            self._specs.append((rel_dir, pathspec.GitIgnoreSpec.from_lines(lines)))

    def ignored(self, rel_path: str, is_dir: bool) -> bool:
        decision = False
        for base, spec in self._specs:
            if base and not rel_path.startswith(base + "/"):
                continue
            sub = rel_path[len(base) + 1 :] if base else rel_path
            result = spec.check_file(sub + "/" if is_dir else sub)  # type: ignore[attr-defined]
            if result.include is not None:
                decision = result.include
        return decision


def _collect(root: Path) -> tuple[list[tuple[str, Path]], list[tuple[str, str]]]:
    """Files and links to package, as (archive path, source) and (archive path, target)."""
    rules = _IgnoreRules()
    files: list[tuple[str, Path]] = []
    links: list[tuple[str, str]] = []
    real_root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        rules.load(root, rel_dir)
        kept_dirs = []
        for name in sorted(dirnames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if name in ALWAYS_EXCLUDED_DIRS or rules.ignored(rel, is_dir=True):
                continue
            if (Path(dirpath) / name).is_symlink():
                links.append((rel, _link_target(root, real_root, rel)))
                continue
            kept_dirs.append(name)
        dirnames[:] = kept_dirs
        for name in sorted(filenames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if rules.ignored(rel, is_dir=False):
                continue
            path = Path(dirpath) / name
            if path.is_symlink():
                links.append((rel, _link_target(root, real_root, rel)))
            elif path.is_file():
                files.append((rel, path))
    return files, links


def _link_target(root: Path, real_root: Path, rel: str) -> str:
    """The link's target relative to its directory; refuse one that leaves the tree."""
    path = root / rel
    resolved = Path(os.path.realpath(path))
    try:
        inside = resolved.relative_to(real_root)
    except ValueError:
        raise PackageError(
            f"symlink {rel} points outside the package directory "
            f"({os.readlink(path)}); remove it or add it to .aitbignore"
        ) from None
    link_dir = posixpath.dirname(rel)
    return posixpath.relpath(inside.as_posix(), link_dir or ".")


def _entry(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
    info.create_system = 3  # Unix, so external_attr carries the mode
    info.external_attr = mode << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def build_package(directory: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> PackageBuild:
    """Zip ``directory`` deterministically, honouring ignore files; raise PackageError."""
    root = Path(directory)
    if not root.is_dir():
        raise PackageError(f"{root} is not a directory")
    files, links = _collect(root)
    entries = sorted([(rel, "file", src) for rel, src in files] + [(rel, "link", t) for rel, t in links])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for rel, kind, source in entries:
            _check_name(rel)  # fail here, not on the server (e.g. a backslash in a file name)
            if kind == "link":
                zf.writestr(_entry(rel, stat.S_IFLNK | 0o777), str(source))
            else:
                executable = os.access(source, os.X_OK)
                info = _entry(rel, stat.S_IFREG | (0o755 if executable else 0o644))
                with open(source, "rb") as src, zf.open(info, "w") as dst:
                    while chunk := src.read(_CHUNK):
                        dst.write(chunk)
            if buf.tell() > max_bytes:
                raise PackageError(_too_big_message(root, files, max_bytes))
    data = buf.getvalue()
    if len(data) > max_bytes:
        raise PackageError(_too_big_message(root, files, max_bytes))
    return PackageBuild(data=data, digest=digest_of(data), files=len(entries))


def _too_big_message(root: Path, files: list[tuple[str, Path]], max_bytes: int) -> str:
    largest = sorted(files, key=lambda f: f[1].stat().st_size, reverse=True)[:3]
    listed = ", ".join(f"{rel} ({human_bytes(src.stat().st_size)})" for rel, src in largest)
    return (
        f"the code package of {root} is over the {human_bytes(max_bytes)} limit; "
        f"largest files: {listed}; exclude data with .aitbignore"
    )


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


# ---------------------------------------------------------------- validating


def _check_name(name: str) -> str:
    """The entry's normalised path without a trailing slash; raise on any unsafe form."""
    if not name or "\x00" in name or any(ord(c) < 32 for c in name):
        raise PackageError(f"entry {name!r} has an empty name or control characters")
    if "\\" in name:
        raise PackageError(f"entry {name!r} contains a backslash")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise PackageError(f"entry {name!r} is an absolute path")
    parts = name.rstrip("/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise PackageError(f"entry {name!r} has an empty, '.' or '..' path component")
    return "/".join(parts)


def _resolve(parts: list[str], links: dict[str, str], hops: int = 0) -> list[str] | None:
    """Resolve a relative path through the package's links; None when it leaves the tree."""
    if hops > _MAX_LINK_HOPS:
        raise PackageError("links in the package form a loop or a chain that is too long")
    stack: list[str] = []
    for part in parts:
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return None
            stack.pop()
            continue
        stack.append(part)
        target = links.get("/".join(stack))
        if target is not None:
            if target.startswith("/"):
                return None
            stack.pop()
            resolved = _resolve(stack + target.split("/"), links, hops + 1)
            if resolved is None:
                return None
            stack = resolved
    return stack


@dataclass(frozen=True)
class _Entry:
    info: zipfile.ZipInfo
    path: str
    kind: str  # "file" | "dir" | "link"


def _entries(zf: zipfile.ZipFile, max_files: int) -> list[_Entry]:
    infos = zf.infolist()
    if len(infos) > max_files:
        raise PackageError(f"the package has {len(infos)} entries, more than the limit of {max_files}")
    seen: set[str] = set()
    out: list[_Entry] = []
    for info in infos:
        path = _check_name(info.filename)
        if path in seen:
            raise PackageError(f"entry {path!r} appears twice")
        seen.add(path)
        if info.flag_bits & 0x1:
            raise PackageError(f"entry {path!r} is encrypted")
        mode = info.external_attr >> 16 if info.create_system == 3 else 0
        kind_bits = stat.S_IFMT(mode)
        if info.is_dir() or kind_bits == stat.S_IFDIR:
            kind = "dir"
        elif kind_bits == stat.S_IFLNK:
            kind = "link"
        elif kind_bits in (0, stat.S_IFREG):
            kind = "file"
        else:
            raise PackageError(f"entry {path!r} is a device, socket or pipe")
        out.append(_Entry(info, path, kind))
    return out


def _read_limited(zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int) -> int:
    """Decompress one entry (checking its CRC) without trusting its declared size."""
    total = 0
    with zf.open(info) as src:
        while chunk := src.read(_CHUNK):
            total += len(chunk)
            if total > budget:
                raise PackageError("the package expands to more than the allowed uncompressed size")
    return total


def validate_package(
    data: bytes,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
    max_uncompressed: int | None = None,
) -> PackageInfo:
    """Check untrusted package bytes completely; raise PackageError with the first problem."""
    if len(data) > max_bytes:
        raise PackageError(f"the package is {human_bytes(len(data))}, over the {human_bytes(max_bytes)} limit")
    limit = max_uncompressed if max_uncompressed is not None else UNCOMPRESSED_FACTOR * max_bytes
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            entries = _entries(zf, max_files)
            declared = sum(e.info.file_size for e in entries)
            if declared > limit:
                raise PackageError(
                    f"the package expands to {human_bytes(declared)}, over the "
                    f"{human_bytes(limit)} uncompressed limit"
                )
            links: dict[str, str] = {}
            for e in entries:
                if e.kind == "link":
                    if e.info.file_size > _MAX_LINK_TARGET:
                        raise PackageError(f"link {e.path!r} has an overlong target")
                    links[e.path] = zf.read(e.info).decode("utf-8", errors="strict")
            _check_links(entries, links)
            used = 0
            for e in entries:
                if e.kind == "file":
                    used += _read_limited(zf, e.info, limit - used)
    except PackageError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, UnicodeDecodeError, NotImplementedError) as exc:
        raise PackageError(f"not a valid zip package: {exc}") from None
    files = sum(1 for e in entries if e.kind != "dir")
    return PackageInfo(digest=digest_of(data), size=len(data), files=files, uncompressed=used)


def _check_links(entries: list[_Entry], links: dict[str, str]) -> None:
    for path, target in links.items():
        if not target or target.startswith("/") or "\\" in target or "\x00" in target:
            raise PackageError(f"link {path!r} -> {target!r} points outside the package")
        parent = posixpath.dirname(path)
        parts = (parent.split("/") if parent else []) + target.split("/")
        if _resolve(parts, links) is None:
            raise PackageError(f"link {path!r} -> {target!r} points outside the package")
    for e in entries:
        parts = e.path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in links:
                raise PackageError(f"entry {e.path!r} passes through a link")


# ---------------------------------------------------------------- extracting


def extract_package(
    data: bytes,
    dest: Path,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
    max_uncompressed: int | None = None,
) -> PackageInfo:
    """Validate, then extract into ``dest`` (created; must be empty): files first, links last."""
    info = validate_package(data, max_bytes, max_files, max_uncompressed)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise PackageError(f"extraction directory {dest} is not empty")
    real_dest = dest.resolve()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        entries = _entries(zf, max_files)
        for e in entries:
            target = dest / e.path
            if e.kind == "dir":
                target.mkdir(parents=True, exist_ok=True)
            elif e.kind == "file":
                target.parent.mkdir(parents=True, exist_ok=True)
                mode = (e.info.external_attr >> 16) & 0o755 if e.info.create_system == 3 else 0
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as dst, zf.open(e.info) as src:
                    while chunk := src.read(_CHUNK):
                        dst.write(chunk)
                os.chmod(target, (mode | 0o600) if mode else 0o644)
        for e in entries:
            if e.kind == "link":
                target = dest / e.path
                target.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(zf.read(e.info).decode(), target)
        for e in entries:
            if e.kind == "link":
                resolved = Path(os.path.realpath(dest / e.path))
                if resolved != real_dest and real_dest not in resolved.parents:
                    raise PackageError(f"link {e.path!r} points outside the package")
    return info
