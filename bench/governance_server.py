"""Bench only (bench/governance.py --api): run the API server as `aitb server` does, with
governance on (`aitb.api.app:create_app`) or off (`governance_off_app:create_app`).

    python bench/governance_server.py on|off

Settings come from the environment exactly as for `aitb server` (port, workers, data dir);
bench/api_load.py's `start_server` starts it (its `command`).
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> None:
    import uvicorn

    from aitb.settings import default_workers, get_settings

    mode = sys.argv[1]
    target = {"on": "aitb.api.app:create_app", "off": "governance_off_app:create_app"}[mode]
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # workers import governance_off_app
    settings = get_settings()
    uvicorn.run(target, factory=True, host=settings.server.host, port=settings.server.port,
                workers=settings.server.workers or default_workers(), log_level=settings.server.log_level,
                proxy_headers=True)


if __name__ == "__main__":
    main()
