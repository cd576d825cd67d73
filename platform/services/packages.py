"""Content-addressed code packages uploaded by the CLI."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from sqlalchemy.orm import Session

from aitb.domain.models import Package
from aitb.packaging import PackageError, validate_package
from aitb.services.authz import Principal
from aitb.services.errors import Invalid, TooLarge
from aitb.store import packages as package_store

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def package_path(packages_dir: Path, digest: str) -> Path:
    return packages_dir / f"{digest.split(':', 1)[1]}.zip"


def store_package(
    session: Session,
    who: Principal,
    data: bytes,
    packages_dir: Path,
    max_bytes: int,
    max_files: int,
) -> tuple[Package, bool]:
    """Validate and keep a package; returns (package, created)."""
    if len(data) > max_bytes:
        raise TooLarge(f"package is {len(data)} bytes; the limit is {max_bytes} bytes")
    try:
        info = validate_package(data, max_bytes=max_bytes, max_files=max_files)
    except PackageError as exc:
        raise Invalid(f"invalid code package: {exc}") from None
    existing = package_store.get_package(session, info.digest)
    path = package_path(packages_dir, info.digest)
    if not path.exists():
        packages_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)  # atomic: readers never see half a package
        except OSError:  # e.g. the disk is full (the API answers 507): leave nothing behind
            tmp.unlink(missing_ok=True)
            raise
    if existing is not None:
        return existing, False
    package = Package(digest=info.digest, size=info.size, files=info.files)
    return package_store.add_package(session, package, uploaded_by=who.name), True


def has_package(session: Session, digest: str) -> bool:
    return DIGEST.match(digest) is not None and package_store.get_package(session, digest) is not None
