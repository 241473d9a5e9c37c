"""A researcher's path in a real browser: log in, choose a profile, start, land in JupyterLab."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..hubprocess import PASSWORD, HubProcess

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).parent / "screenshots"
# Flags for a headless Chromium on a machine with no network beyond loopback and no user namespace.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    process = HubProcess(Path(tmp_path_factory.mktemp("hub"))).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (scripts/install-system.sh chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def test_log_in_choose_a_profile_and_land_in_jupyterlab(hub: HubProcess, browser) -> None:  # type: ignore[no-untyped-def]
    SCREENSHOTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.set_default_timeout(60_000)

    page.goto(f"{hub.url}/hub/login")
    page.fill("input[name=username]", "bob")
    page.fill("input[name=password]", PASSWORD)
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_url("**/hub/spawn")

    cards = page.locator(".jhub-ext-profile")
    assert cards.count() == 3
    assert page.locator("#profile-item-small").is_checked()  # the default, on a first visit
    gpu = page.locator(".jhub-ext-profile[data-slug=gpu-a100]")
    assert "1 × NVIDIA-A100-SXM4-80GB GPU" in gpu.inner_text()
    assert "$2.50 per hour" in gpu.inner_text()

    page.click("label[for=profile-item-small]")
    page.select_option("select[name='profile-option-small--image']", "r")
    page.screenshot(path=str(SCREENSHOTS / "spawn-menu.png"), full_page=True)
    page.click("form#spawn_form button[type=submit]")

    page.wait_for_url("**/user/bob/lab**", timeout=120_000)
    page.wait_for_selector("#jp-main-dock-panel", timeout=120_000)  # JupyterLab's main area rendered
    assert "JupyterLab" in page.title()
    page.screenshot(path=str(SCREENSHOTS / "jupyterlab.png"))
    page.close()
