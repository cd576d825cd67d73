"""Signed, expiring package URLs: a pod fetches exactly its package, and nothing else."""

from __future__ import annotations

import io
import zipfile
from urllib.parse import parse_qs, urlparse

import pytest
from fastapi.testclient import TestClient

from aitb.api.app import create_app
from aitb.services.package_urls import PackageUrlSigner, signing_key, verify
from aitb.settings import ServerSettings, Settings


def make_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:  # a fixed timestamp: the same bytes every call
        z.writestr(zipfile.ZipInfo("train.py", date_time=(2026, 1, 1, 0, 0, 0)), "print('hello')\n")
    return buf.getvalue()


@pytest.fixture
def app(tmp_path):
    settings = Settings(data_dir=tmp_path, testbed="testbeds/local.yaml", bootstrap_admin_token="aitb_admin_token_x",
                        server=ServerSettings(public_url="http://aitb.test"),
                        scheduler={"enabled": False})
    with TestClient(create_app(settings)) as client:
        yield client, settings


def test_a_signed_url_fetches_its_package_until_it_expires(app):
    client, settings = app
    r = client.post("/v1/packages", content=make_zip(), headers={"Authorization": "Bearer aitb_admin_token_x",
                                                                 "Content-Type": "application/zip"})
    assert r.status_code == 201, r.text
    digest = r.json()["digest"]
    now = [1_000_000.0]
    signer = PackageUrlSigner(signing_key(settings.packages_dir), "http://aitb.test", ttl_s=60,
                              clock=lambda: now[0])
    url = signer.url(digest)
    path = urlparse(url)
    query = parse_qs(path.query)
    assert path.path == f"/v1/packages/{digest}"
    # the real clock is far past 1_000_060: this URL has expired
    assert client.get(f"{path.path}?{path.query}").status_code == 401
    now[0] = __import__("time").time()
    fresh = urlparse(signer.url(digest))
    got = client.get(f"{fresh.path}?{fresh.query}")
    assert got.status_code == 200 and got.content == make_zip()
    assert zipfile.ZipFile(io.BytesIO(got.content)).read("train.py") == b"print('hello')\n"
    # the signature is for this digest only, and cannot be altered
    other = "sha256:" + "0" * 64
    q = parse_qs(fresh.query)
    assert client.get(f"/v1/packages/{other}?exp={q['exp'][0]}&sig={q['sig'][0]}").status_code == 401
    assert client.get(f"{fresh.path}?exp={int(q['exp'][0]) + 1000}&sig={q['sig'][0]}").status_code == 401
    assert client.get(f"{fresh.path}").status_code == 422  # no signature at all
    assert int(query["exp"][0]) == 1_000_060


def test_verify_rejects_a_wrong_key_and_expiry():
    key = b"k" * 32
    signer = PackageUrlSigner(key, "http://x", ttl_s=10, clock=lambda: 100.0)
    q = parse_qs(urlparse(signer.url("sha256:" + "a" * 64)).query)
    assert verify(key, "sha256:" + "a" * 64, int(q["exp"][0]), q["sig"][0], now=105)
    assert not verify(key, "sha256:" + "a" * 64, int(q["exp"][0]), q["sig"][0], now=111)
    assert not verify(b"j" * 32, "sha256:" + "a" * 64, int(q["exp"][0]), q["sig"][0], now=105)


def test_a_configured_key_wins_and_a_made_key_is_kept_private(tmp_path):
    assert signing_key(tmp_path, "ab" * 16) == bytes.fromhex("ab" * 16)
    made = signing_key(tmp_path / "packages")
    assert signing_key(tmp_path / "packages") == made and len(made) == 32
    assert ((tmp_path / "packages" / ".url-signing.key").stat().st_mode & 0o777) == 0o600
