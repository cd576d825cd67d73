"""Code package download by a signed, expiring URL (for job pods on Kubernetes clusters)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from aitb.api.deps import StateDep
from aitb.api.routers import errors
from aitb.api.schemas import API_VERSION
from aitb.services.errors import NotFound, Unauthenticated
from aitb.services.package_urls import signing_key, verify
from aitb.services.packages import DIGEST, package_path

router = APIRouter(prefix=f"/{API_VERSION}", tags=["jobs"])


@router.get(
    "/packages/{digest}",
    response_class=FileResponse,
    responses={200: {"content": {"application/zip": {}}, "description": "the package"},
               **errors(401, 404, 422)},
)
def download_package(
    digest: str,
    state: StateDep,
    exp: Annotated[int, Query(description="expiry, unix seconds")],
    sig: Annotated[str, Query(max_length=128, description="HMAC-SHA256 of digest and expiry")],
) -> FileResponse:
    """No bearer token: the signature is the credential, scoped to this package until `exp`
    (a wrong or expired one is answered 401, like a bad token)."""
    settings = state.settings
    key = signing_key(settings.packages_dir, settings.packages.url_signing_key)
    if not DIGEST.match(digest) or not verify(key, digest, exp, sig, time.time()):
        raise Unauthenticated("invalid or expired package URL")
    path = package_path(state.settings.packages_dir, digest)
    if not path.exists():
        raise NotFound(f"unknown package {digest}")
    return FileResponse(path, media_type="application/zip", filename=f"{digest.split(':', 1)[1]}.zip")
