"""Errors a service raises; the API maps each to its HTTP status and `detail`."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


class ServiceError(Exception):
    status = 400

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class NotFound(ServiceError):
    status = 404


class Forbidden(ServiceError):
    status = 403


class Unauthenticated(ServiceError):
    status = 401


class Conflict(ServiceError):
    status = 409


class Invalid(ServiceError):
    status = 422


class TooLarge(ServiceError):
    status = 413


def found(value: T | None, what: str) -> T:
    """``value``, or NotFound("unknown <what>") when there is none."""
    if value is None:
        raise NotFound(f"unknown {what}")
    return value
