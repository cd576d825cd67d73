"""`aitb server`: the API process (and, in it, the control loops)."""

from __future__ import annotations

import click


@click.command("server")
@click.option("--host", default=None, help="bind address (default: settings server.host)")
@click.option("--port", type=int, default=None, help="port (default: settings server.port)")
@click.option("--workers", type=int, default=None,
              help="uvicorn worker processes (default: settings server.workers, else one per CPU, at most 4)")
def server(host: str | None, port: int | None, workers: int | None) -> None:
    """Run the control-plane API server with the scheduler and reconciler loops."""
    import uvicorn

    from aitb.settings import default_workers, get_settings

    settings = get_settings()
    count = workers or settings.server.workers or default_workers()
    # every worker migrates on start; the migration itself takes a lock, so they queue
    uvicorn.run(
        "aitb.api.app:create_app",
        factory=True,
        host=host or settings.server.host,
        port=port if port is not None else settings.server.port,
        workers=count,
        log_level=settings.server.log_level,
        proxy_headers=True,
    )
