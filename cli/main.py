"""Entry point of the `aitb` command (placeholder until the CLI lands)."""

import click


@click.group()
def main() -> None:
    """aitb: run experiments across the testbed federation."""


if __name__ == "__main__":
    main()
