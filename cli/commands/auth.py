"""`aitb login | logout | whoami | profiles`: which server, as whom."""

from __future__ import annotations

import click

from aitb.cli.client import ApiClient, normalize_url
from aitb.cli.config import Profile, config_path, load_config, save_config
from aitb.cli.context import AppContext, output_option, pass_app, seg
from aitb.cli.errors import ConfigError
from aitb.cli.output import fmt_time, note, print_fields, print_json, print_table

DEFAULT_PROFILE = "default"


@click.command()
@click.argument("url")
@click.option("--token", "login_token", default=None, help="API token (prompted for when left out).")
@click.option("--profile", "login_profile", default=None, help="Profile name to store it under.")
@output_option
@pass_app
def login(app: AppContext, url: str, login_token: str | None, login_profile: str | None) -> None:
    """Check a token against the server at URL and store it as a profile.

    The token is read from --token, else prompted for (or read from stdin).
    """
    token = login_token or app.token or click.prompt("Token", hide_input=True, err=True)
    url = normalize_url(url)
    with ApiClient(url, token.strip()) as client:
        me = client.get("/users/me")
    config = load_config()
    name = login_profile or app.profile or config.active or DEFAULT_PROFILE
    config.profiles[name] = Profile(url=url, token=token.strip())
    config.active = name
    path = save_config(config)
    if app.json:
        print_json({"profile": name, "url": url, "user": me, "config": str(path)})
    else:
        click.echo(f"Logged in to {url} as {me.get('name')} (profile {name!r}, saved in {path})")


@click.command()
@output_option
@pass_app
def logout(app: AppContext) -> None:
    """Forget the active profile (or --profile) and its token."""
    config = load_config()
    name = app.profile or config.active
    if not name or name not in config.profiles:
        raise ConfigError("not logged in: no profile to log out of")
    del config.profiles[name]
    if config.active == name:
        config.active = None
    save_config(config)
    if app.json:
        print_json({"profile": name, "logged_out": True})
    else:
        click.echo(f"Logged out of profile {name!r}")


@click.command()
@output_option
@pass_app
def whoami(app: AppContext) -> None:
    """Who the server thinks you are: user, partner, roles, projects."""
    me = app.client().get("/users/me")
    target = app.target()
    if app.json:
        print_json({**me, "url": app.client().url, "profile": target.profile})
        return
    projects = ", ".join(f"{p['project']} ({p['role']})" for p in me.get("projects") or [])
    print_fields(
        [
            ("user", me.get("name")),
            ("partner", me.get("partner")),
            ("roles", me.get("roles")),
            ("projects", projects),
            ("token expires", fmt_time(me.get("token_expires_at"))),
            ("server", app.client().url),
            ("profile", target.profile),
        ]
    )


@click.group(invoke_without_command=True)
@output_option
@pass_app
@click.pass_context
def profiles(ctx: click.Context, app: AppContext) -> None:
    """List the stored profiles (`aitb profiles use NAME` switches)."""
    if ctx.invoked_subcommand is not None:
        return
    config = load_config()
    rows = [
        {"name": name, "url": p.url, "active": name == config.active, "token": bool(p.token)}
        for name, p in sorted(config.profiles.items())
    ]
    if app.json:
        print_json(rows)
        return
    print_table(
        rows,
        [
            ("", lambda r: "*" if r["active"] else ""),
            ("PROFILE", lambda r: r["name"]),
            ("URL", lambda r: r["url"]),
            ("TOKEN", lambda r: "stored" if r["token"] else "none"),
        ],
        empty=f"no profiles in {config_path()}: run `aitb login URL`",
    )


@profiles.command("use")
@click.argument("name")
@pass_app
def profiles_use(app: AppContext, name: str) -> None:
    """Make NAME the active profile."""
    config = load_config()
    if name not in config.profiles:
        raise ConfigError(f"no profile named {name!r} (known: {', '.join(sorted(config.profiles)) or 'none'})")
    config.active = name
    save_config(config)
    note(f"Active profile: {name} ({config.profiles[name].url})", json_mode=False)


@click.command("mlflow-login")
@output_option
@pass_app
def mlflow_login(app: AppContext) -> None:
    """Get a new password for your MLflow UI account (the old one stops working)."""
    with app.client() as client:
        me = client.get("/users/me")
        login = client.post(f"/users/{seg(me['name'])}/mlflow-password")
    if app.json:
        print_json(login)
    else:
        click.echo(f"MLflow UI: {login.get('tracking_uri')}")
        click.echo(f"user:      {login['username']}")
        click.echo(f"password:  {login['password']}   (shown once)")
