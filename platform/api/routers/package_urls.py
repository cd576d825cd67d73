"""Code package download by a signed, expiring URL (for job pods on Kubernetes clusters)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from aitb.api.deps import StateDep
from aitb.api.routers import errors
from aitb.services.package_urls import signed_package
from aitb.version import API_PREFIX

router = APIRouter(prefix=API_PREFIX, tags=["jobs"])


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
    path = signed_package(settings.packages_dir, settings.packages.url_signing_key, digest, exp, sig, time.time())
    return FileResponse(path, media_type="application/zip", filename=f"{digest.split(':', 1)[1]}.zip")
