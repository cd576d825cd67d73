"""Short-lived URLs that let a job's pod fetch exactly one code package, without a token.

`GET /v1/packages/{digest}?exp=<unix time>&sig=<hex>`: the signature is an HMAC-SHA256, under
a key only the control plane holds, of the digest and the expiry, so a URL is good for that
package only and only until it expires. KubeRay's submitter pod uses one at start-up
(docs/kubernetes.md); nothing else is granted by it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from aitb.osutil import secret_file
from aitb.services.errors import NotFound, Unauthenticated
from aitb.services.packages import DIGEST, package_path
from aitb.version import API_VERSION

DEFAULT_TTL_S = 900


def _signature(key: bytes, digest: str, expires: int) -> str:
    return hmac.new(key, f"{digest}\n{expires}".encode(), hashlib.sha256).hexdigest()


def verify(key: bytes, digest: str, expires: int, signature: str, now: float) -> bool:
    """True when `signature` is the control plane's for this digest and it has not expired."""
    if expires < now:
        return False
    return hmac.compare_digest(_signature(key, digest, expires), signature)


@dataclass(frozen=True)
class PackageUrlSigner:
    key: bytes
    base_url: str  # the control plane as pods reach it, e.g. https://aitb.example.org
    ttl_s: int = DEFAULT_TTL_S
    clock: Callable[[], float] = time.time

    def url(self, digest: str) -> str:
        expires = int(self.clock()) + self.ttl_s
        query = urlencode({"exp": expires, "sig": _signature(self.key, digest, expires)})
        return f"{self.base_url.rstrip('/')}/{API_VERSION}/packages/{digest}?{query}"


def signing_key(packages_dir: Path, configured: str | None = None) -> bytes:
    """The key package URLs are signed with: the configured one (`AITB_PACKAGES__URL_SIGNING_KEY`,
    e.g. from a Kubernetes Secret), else one made once in the packages directory and kept
    0600 — the directory every API replica and the scheduler share, as they share packages."""
    if configured:
        return bytes.fromhex(configured)
    return bytes.fromhex(secret_file(packages_dir / ".url-signing.key", lambda: secrets.token_hex(32)))


def signed_package(packages_dir: Path, configured_key: str | None, digest: str, expires: int,
                   signature: str, now: float) -> Path:
    """The package file a signed URL grants; a wrong or expired signature is Unauthenticated
    (like a bad token), a package not on disk NotFound."""
    key = signing_key(packages_dir, configured_key)
    if not DIGEST.match(digest) or not verify(key, digest, expires, signature, now):
        raise Unauthenticated("invalid or expired package URL")
    path = package_path(packages_dir, digest)
    if not path.exists():
        raise NotFound(f"unknown package {digest}")
    return path
