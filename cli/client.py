"""A thin httpx wrapper for the aitb HTTP API (docs/api.md).

Every failure leaves here as a CliError: one line with the status and the
server's ``detail``; exit code 1 for error responses, 3 when the server cannot
be reached (the message names the URL tried).
"""

from __future__ import annotations

from typing import Any

import httpx

from aitb.cli.errors import ApiError, ConfigError, UnreachableError
from aitb.version import API_PREFIX

DEFAULT_TIMEOUT_S = 30.0


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url


def error_message(response: httpx.Response) -> str:
    """One line: ``<status> <reason>: <detail>[; <field>: <msg> ...]``."""
    detail: str | None = None
    errors: list[str] = []
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        if body.get("detail") is not None:
            detail = body["detail"] if isinstance(body["detail"], str) else str(body["detail"])
        for err in body.get("errors") or []:
            if isinstance(err, dict):
                loc = err.get("loc")
                loc = ".".join(str(p) for p in loc) if isinstance(loc, list) else loc
                errors.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    if detail is None:
        text = response.text.strip()
        detail = text[:200] if text and not text.startswith("<") else "no detail given"
    line = f"{response.status_code} {response.reason_phrase}: {detail}"
    # the server's detail usually spells the field errors out already: add only the others
    errors = [e for e in errors if e not in detail]
    if errors:
        line += " (" + "; ".join(errors) + ")"
    if response.status_code == 401:
        line += " — log in again with `aitb login URL` or check AITB_TOKEN"
    return line


class ApiClient:
    def __init__(self, url: str, token: str | None, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = normalize_url(url)
        headers = {"User-Agent": "aitb-cli", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        ok: tuple[int, ...] = (),
    ) -> httpx.Response:
        """Send one request; statuses in ``ok`` are returned as they are, like 2xx."""
        clean = {k: v for k, v in (params or {}).items() if v is not None and v != []}
        try:
            response = self._http.request(
                method, path, params=clean, json=json, content=content, headers=headers
            )
        except httpx.UnsupportedProtocol:
            raise ConfigError(f"{self.url} is not an http(s) URL") from None
        except httpx.InvalidURL as exc:
            raise ConfigError(f"invalid server URL {self.url}: {exc}") from None
        except httpx.TimeoutException:
            raise UnreachableError(f"the aitb API at {self.url} did not answer in time") from None
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise UnreachableError(f"cannot reach the aitb API at {self.url}: {reason}") from None
        if response.is_success or response.status_code in ok:
            return response
        raise ApiError(error_message(response), response.status_code)

    def _json(self, response: httpx.Response) -> Any:
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ApiError(
                f"{self.url} answered {response.request.url.path} with something that is not "
                "JSON; is this the aitb API?",
                response.status_code,
            ) from None

    def get(self, path: str, **params: Any) -> Any:
        return self._json(self.request("GET", API_PREFIX + path, params=params))

    def get_paged(self, path: str, limit: int | None, **params: Any) -> list[Any]:
        """Follow ``X-Next-Cursor`` until ``limit`` items (None: all) are read."""
        items: list[Any] = []
        cursor: str | None = None
        while True:
            page_size = 1000 if limit is None else min(1000, limit - len(items))
            response = self.request(
                "GET", API_PREFIX + path, params={**params, "limit": page_size, "cursor": cursor}
            )
            items += self._json(response) or []
            cursor = response.headers.get("X-Next-Cursor")
            if not cursor or (limit is not None and len(items) >= limit):
                return items if limit is None else items[:limit]

    def post(self, path: str, body: Any = None) -> Any:
        return self._json(self.request("POST", API_PREFIX + path, json=body))

    def submit(self, path: str, body: Any, attempts: int = 3) -> Any:
        """POST a submission with an Idempotency-Key, retried (same key) when the server could
        not be reached or answered 503/409: the job is created once, whatever the network did."""
        import time
        import uuid

        headers = {"Idempotency-Key": str(uuid.uuid4())}
        for attempt in range(1, attempts + 1):
            try:
                response = self.request("POST", API_PREFIX + path, json=body, headers=headers)
                return self._json(response)
            except (UnreachableError, ApiError) as exc:
                status = getattr(exc, "status", None)
                retriable = isinstance(exc, UnreachableError) or status in (409, 503)
                if not retriable or attempt == attempts:
                    raise
                time.sleep(0.5 * attempt)
        raise AssertionError("unreachable")

    def put(self, path: str, body: Any) -> Any:
        return self._json(self.request("PUT", API_PREFIX + path, json=body))

    def delete(self, path: str) -> Any:
        return self._json(self.request("DELETE", API_PREFIX + path))

    def exists(self, path: str) -> bool:
        """HEAD: True on 200, False on 404."""
        return self.request("HEAD", API_PREFIX + path, ok=(404,)).status_code != 404

    def upload(self, path: str, data: bytes, content_type: str) -> Any:
        return self._json(
            self.request("POST", API_PREFIX + path, content=data, headers={"Content-Type": content_type})
        )
