"""Options every command shares, and the per-invocation state behind them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

import click

from aitb.cli.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])
OUTPUT_CHOICES = ("table", "json")


@dataclass
class AppContext:
    profile: str | None = None
    url: str | None = None
    token: str | None = None
    output: str = "table"
    _client: Any = field(default=None, repr=False)

    @property
    def json(self) -> bool:
        return self.output == "json"

    def target(self) -> Any:
        from aitb.cli.config import load_config, resolve_target

        return resolve_target(load_config(), self.profile, self.url, self.token)

    def client(self) -> Any:
        """The API client for this invocation; closed when the command ends."""
        if self._client is None:
            from aitb.cli.client import ApiClient

            target = self.target()
            if not target.url:
                raise ConfigError(
                    "no aitb server configured: run `aitb login URL` or set AITB_URL and AITB_TOKEN"
                )
            self._client = ApiClient(target.url, target.token)
            click.get_current_context().find_root().call_on_close(self._client.close)
        return self._client


pass_app = click.make_pass_decorator(AppContext, ensure=True)


def _set_output(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(AppContext).output = value


def output_option(f: F) -> F:
    """``-o/--output`` on a subcommand too (``aitb jobs -o json``), overriding the global one."""
    return click.option(
        "-o",
        "--output",
        type=click.Choice(OUTPUT_CHOICES),
        default=None,
        expose_value=False,
        is_eager=True,
        callback=_set_output,
        help="table for people, json for scripts (prints only JSON)",
    )(f)


def seg(value: str) -> str:
    """One URL path segment from a user-typed name or id."""
    return quote(value, safe=":")
