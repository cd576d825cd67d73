"""One router per resource; each handler only translates HTTP to a service call."""

from aitb.api.schemas import ErrorOut

_TEXT = {
    401: "missing, invalid or expired token",
    403: "not allowed for the caller's roles",
    404: "unknown resource",
    409: "conflict with the current state",
    413: "package too large",
    422: "invalid input",
}


def errors(*codes: int) -> dict[int | str, dict]:
    """OpenAPI entries for the error responses a route can give."""
    return {code: {"model": ErrorOut, "description": _TEXT[code]} for code in codes}
