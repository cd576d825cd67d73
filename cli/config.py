"""CLI profiles: which server to talk to and with which token.

The file is TOML at ``$AITB_CLI_CONFIG`` or ``~/.config/aitb/config.toml``::

    active = "default"

    [profiles.default]
    url = "http://127.0.0.1:8600"
    token = "..."

It holds secrets, so it is written with mode 0600. Where a value comes from,
strongest first: ``--url``/``--token``; the profile named by ``--profile``;
``AITB_URL``/``AITB_TOKEN``; the active profile.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from aitb.cli.errors import ConfigError


@dataclass
class Profile:
    url: str
    token: str | None = None


@dataclass
class CliConfig:
    profiles: dict[str, Profile] = field(default_factory=dict)
    active: str | None = None


@dataclass(frozen=True)
class Target:
    """The server and credentials one command uses, and where they came from."""

    url: str | None
    token: str | None
    profile: str | None


def config_path() -> Path:
    explicit = os.environ.get("AITB_CLI_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "aitb" / "config.toml"


def load_config(path: Path | None = None) -> CliConfig:
    path = path or config_path()
    if not path.exists():
        return CliConfig()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the CLI config {path}: {exc}") from None
    profiles: dict[str, Profile] = {}
    for name, values in (raw.get("profiles") or {}).items():
        if not isinstance(values, dict) or not isinstance(values.get("url"), str):
            raise ConfigError(f"profile {name!r} in {path} has no url")
        token = values.get("token")
        profiles[name] = Profile(url=values["url"], token=token if isinstance(token, str) else None)
    active = raw.get("active")
    return CliConfig(profiles=profiles, active=active if isinstance(active, str) else None)


def _toml_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(c if ord(c) >= 32 else f"\\u{ord(c):04x}" for c in escaped)
    return f'"{escaped}"'


def dumps_config(config: CliConfig) -> str:
    lines = ["# aitb CLI profiles (written by `aitb login`)"]
    if config.active:
        lines.append(f"active = {_toml_string(config.active)}")
    for name in sorted(config.profiles):
        profile = config.profiles[name]
        lines += ["", f"[profiles.{_toml_string(name)}]", f"url = {_toml_string(profile.url)}"]
        if profile.token:
            lines.append(f"token = {_toml_string(profile.token)}")
    return "\n".join(lines) + "\n"


def save_config(config: CliConfig, path: Path | None = None) -> Path:
    """Write atomically, readable only by the owner (it holds tokens)."""
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(dumps_config(config))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def resolve_target(
    config: CliConfig,
    profile: str | None = None,
    url: str | None = None,
    token: str | None = None,
    env: dict[str, str] | None = None,
) -> Target:
    """Pick url and token by the precedence in the module docstring."""
    env = dict(os.environ) if env is None else env
    if profile is not None:
        if profile not in config.profiles:
            known = ", ".join(sorted(config.profiles)) or "none"
            raise ConfigError(f"no profile named {profile!r} (known: {known})")
        chosen = config.profiles[profile]
        return Target(url=url or chosen.url, token=token or chosen.token, profile=profile)
    active = config.profiles.get(config.active) if config.active else None
    env_url, env_token = env.get("AITB_URL") or None, env.get("AITB_TOKEN") or None
    chosen_url = url or env_url or (active.url if active else None)
    # never send the active profile's token to another server
    from_active = active is not None and chosen_url == active.url
    return Target(
        url=chosen_url,
        token=token or env_token or (active.token if from_active and active else None),
        profile=config.active if from_active else None,
    )
