"""Code packages: the record of each uploaded digest (the bytes live on disk)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from aitb.domain.models import Package
from aitb.store.tables import PackageRow


def get_package(session: Session, digest: str) -> Package | None:
    row = session.get(PackageRow, digest)
    return Package(digest=row.digest, size=row.size, files=row.files) if row else None


def add_package(session: Session, package: Package, uploaded_by: str) -> Package:
    session.add(PackageRow(digest=package.digest, size=package.size, files=package.files, uploaded_by=uploaded_by))
    session.flush()
    return package
