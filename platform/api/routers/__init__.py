"""One router per resource; each handler only translates HTTP to a service call."""

from aitb.api.schemas import ErrorOut

_TEXT = {
    401: "missing, invalid or expired token",
    403: "not allowed for the caller's roles",
    404: "unknown resource",
    409: "conflict with the current state",
    413: "package too large",
    422: "invalid input",
    507: "the server's disk is full: nothing was stored",
}


def errors(*codes: int) -> dict[int | str, dict]:
    """OpenAPI entries for the error responses a route can give."""
    return {code: {"model": ErrorOut, "description": _TEXT[code]} for code in codes}


def first_error(exc: ValueError) -> str:
    """One readable line from a pydantic ValidationError (or any ValueError)."""
    errors_ = getattr(exc, "errors", None)
    if callable(errors_):
        first = errors_()[0]
        where = ".".join(str(p) for p in first["loc"])
        msg = str(first["msg"]).removeprefix("Value error, ")
        return f"{where}: {msg}" if where else msg
    return str(exc)
