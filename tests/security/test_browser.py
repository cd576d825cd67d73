"""The MLflow UI in a real browser: each partner's user sees exactly its own experiments and runs.

Headless Chromium (Debian's `chromium`) driven by Playwright over the DevTools protocol. The UI
cannot take credentials in the URL (its own API requests then fail), so the basic-auth header
is put on every request of the browser context, as a logged-in browser would send it.
Screenshots land in the test's tmp dir; with AITB_UPDATE_DOCS_IMG=1 partner A's experiments
and run pages are copied to docs/img/ (as committed).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.security.conftest import World

pytestmark = pytest.mark.mlflow

CHROMIUM = os.environ.get("AITB_CHROMIUM", "/usr/bin/chromium")
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium; or set AITB_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright Python package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                  args=["--no-sandbox", "--disable-dev-shm-usage"])  # fmt: skip
        except Exception as exc:  # a browser that cannot start here is a skip, not a failure
            pytest.skip(f"Chromium at {CHROMIUM} does not start: {exc}")
        yield b
        b.close()


#: What the UI asks for that the guard refuses tenants, and the UI takes quietly.
QUIET_REFUSALS = {"/ajax-api/3.0/mlflow/assistant/config", "/ajax-api/3.0/mlflow/assistant/providers"}


def _page(browser, world: World, role: str, refused: list[str]):
    account = world.accounts[role]
    token = base64.b64encode(f"{account.username}:{account.password}".encode()).decode()
    context = browser.new_context(extra_http_headers={"Authorization": f"Basic {token}"},
                                  viewport={"width": 1400, "height": 900})  # fmt: skip
    page = context.new_page()

    def seen(response) -> None:
        if response.status in (401, 403) and response.url.startswith(world.url):
            refused.append(f"{response.status} {response.request.method} {response.url[len(world.url):]}")

    page.on("response", seen)
    return context, page


def _links(page, pattern: str) -> set[str]:
    hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))")
    return {m.group(1) for h in hrefs if (m := re.search(pattern, h or ""))}


def _open(page, url: str, ready_text: str | None) -> str:
    page.goto(url, wait_until="load")  # the UI polls: the network never goes idle
    if ready_text:
        page.get_by_text(ready_text, exact=False).first.wait_for(timeout=30_000)
    page.wait_for_timeout(1500)  # let the tables settle after the data arrives
    return page.inner_text("body")


@pytest.mark.parametrize("side", ["a", "b"])
def test_each_partner_sees_exactly_its_own_experiments_and_runs(browser, world: World, side: str, tmp_path) -> None:
    own, other = world.sides[side], world.sides["b" if side == "a" else "a"]
    refused: list[str] = []
    context, page = _page(browser, world, f"{side}_user", refused)
    try:
        # Experiments page: exactly the partner's project experiment.
        body = _open(page, f"{world.url}/#/experiments", f"{own.partner}/proj")
        page.screenshot(path=str(tmp_path / f"{side}-experiments.png"), full_page=True)
        assert f"{own.partner}/proj" in body
        assert other.partner not in body and "Default" not in body
        # (other tests in the session may have made this user a member of more A projects)
        granted = {e for e, holders in world.access.inventory().items()
                   if world.accounts[f"{side}_user"].username in holders}  # fmt: skip
        listed = _links(page, r"#/experiments/(\d+)$")
        assert own.experiment_id in listed and listed == granted
        names = world.tracker.experiment_names()
        assert all(names[e].startswith(f"{own.partner}/") for e in listed), [names[e] for e in listed]

        # The experiment's runs: only its own.
        _open(page, f"{world.url}/#/experiments/{own.experiment_id}/runs", "train-resnet")
        runs = _links(page, rf"#/experiments/{own.experiment_id}/runs/([0-9a-f]{{32}})")
        page.screenshot(path=str(tmp_path / f"{side}-runs.png"), full_page=True)
        assert own.run_id in runs
        assert other.run_id not in runs and other.run_id not in page.inner_text("body")

        # A run page: the run's own data is there.
        body = _open(page, f"{world.url}/#/experiments/{own.experiment_id}/runs/{own.run_id}", own.run_id)
        page.screenshot(path=str(tmp_path / f"{side}-run.png"), full_page=True)
        assert own.run_id in body and "loss" in body
        assert other.partner not in body
        # The UI works through the guard: nothing it needs for its own data was refused.
        unexpected = [r for r in refused if r.split(" ")[2].split("?")[0] not in QUIET_REFUSALS]
        assert not unexpected, unexpected

        # The other partner's run, by its address: nothing of it is shown.
        _open(page, f"{world.url}/#/experiments/{other.experiment_id}/runs/{other.run_id}", None)
        page.wait_for_timeout(4000)
        body = page.inner_text("body")
        page.screenshot(path=str(tmp_path / f"{side}-other-run.png"), full_page=True)
        assert other.partner not in body and "secret of" not in body
        assert "loss" not in body
        if side == "a" and os.environ.get("AITB_UPDATE_DOCS_IMG"):  # refresh the docs' pictures
            DOCS_IMG.mkdir(parents=True, exist_ok=True)
            shutil.copy(tmp_path / "a-run.png", DOCS_IMG / "mlflow-partner-run.png")
            shutil.copy(tmp_path / "a-experiments.png", DOCS_IMG / "mlflow-partner-experiments.png")
    finally:
        context.close()
