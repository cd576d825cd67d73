"""Entry point of the `aitb` command.

Commands load lazily (``aitb --version`` and ``aitb jobs`` never import
mlflow, ray, fastapi or sqlalchemy); a command whose module is not there or
fails to import is left out instead of breaking the CLI.
"""

from __future__ import annotations

import importlib

import click

from aitb.cli.context import OUTPUT_CHOICES, AppContext

#: command name -> "module:attribute" under aitb.cli.commands
COMMANDS: dict[str, str] = {
    "login": "auth:login",
    "logout": "auth:logout",
    "whoami": "auth:whoami",
    "profiles": "auth:profiles",
    "mlflow-login": "auth:mlflow_login",
    "submit": "submit:submit",
    "jobs": "jobs:jobs",
    "status": "jobs:status",
    "cancel": "jobs:cancel",
    "logs": "jobs:logs",
    "queue": "queue:queue",
    "quota": "queue:quota",
    "admin": "admin:admin",
    "policy": "governance:policy",
    "dataset": "governance:dataset",
    "grant": "governance:grant",
    "up": "local:up",
    "down": "local:down",
    "ps": "local:ps",
    "demo": "demo:demo",
    "sim": "sim:sim",
    "server": "server:server",
    # accounting (cli/commands/accounting.py)
    "usage": "accounting:usage",
    "fairshare": "accounting:fairshare",
    "capacity": "accounting:capacity",
    "report": "accounting:report",
}


#: sub-commands kept in their own module: parent command -> "module:attribute" list
SUBCOMMANDS: dict[str, list[str]] = {"admin": ["tracking:tracking"]}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        spec = COMMANDS.get(cmd_name)
        if spec is None:
            return None
        module_name, attr = spec.split(":")  # an import error is a bug and must show
        command = getattr(importlib.import_module(f"aitb.cli.commands.{module_name}"), attr)
        for sub in SUBCOMMANDS.get(cmd_name, []):
            sub_module, sub_attr = sub.split(":")
            loaded = getattr(importlib.import_module(f"aitb.cli.commands.{sub_module}"), sub_attr)
            if isinstance(command, click.Group) and loaded.name not in command.commands:
                command.add_command(loaded)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--profile", default=None, help="Use this profile from the CLI config file.")
@click.option("--url", default=None, help="Server URL (overrides profile and AITB_URL).")
@click.option("--token", default=None, help="API token (overrides profile and AITB_TOKEN).")
@click.option(
    "-o",
    "--output",
    type=click.Choice(OUTPUT_CHOICES),
    default="table",
    show_default=True,
    help="table for people, json for scripts (prints only JSON).",
)
@click.version_option(package_name="aitb", prog_name="aitb")
@click.pass_context
def main(ctx: click.Context, profile: str | None, url: str | None, token: str | None, output: str) -> None:
    """aitb: run experiments across the AI testbed federation.

    Profiles live in ~/.config/aitb/config.toml (or $AITB_CLI_CONFIG);
    AITB_URL and AITB_TOKEN override the active profile.
    """
    ctx.obj = AppContext(profile=profile, url=url, token=token, output=output)


if __name__ == "__main__":
    main()
