"""A researcher's path in a real browser: the spawn menu into JupyterLab, and the jobs dashboard."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ..hubprocess import PASSWORD, HubProcess

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).parent / "screenshots"


def test_log_in_choose_a_profile_and_land_in_jupyterlab(hub: HubProcess, browser) -> None:  # type: ignore[no-untyped-def]
    SCREENSHOTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.set_default_timeout(60_000)

    log_in(page, hub, "bob")
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


def log_in(page, hub: HubProcess, user: str) -> None:  # type: ignore[no-untyped-def]
    """Log ``user`` in through the hub's login form."""
    page.goto(f"{hub.url}/hub/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("input[type=submit], button[type=submit]")


def api_token(hub: HubProcess, user: str) -> str:
    client = hub.client(user)
    client.login()
    return str(client.api("POST", f"/users/{user}/tokens", json={"note": "browser test"}).json()["token"])


def test_the_jobs_dashboard_shows_live_logs_as_text_and_stops_a_job(hub: HubProcess, browser) -> None:  # type: ignore[no-untyped-def]
    import requests

    token = api_token(hub, "alice")
    code = (
        "import time\nprint('<img src=x onerror=\"document.title=1\">', flush=True)\n"
        "for i in range(600):\n    print('page', i, flush=True)\n    time.sleep(0.5)\n"
    )
    api = f"{hub.url}/services/jobs/api"
    headers = {"Authorization": f"token {token}"}
    wait = 0
    while wait < 60 and requests.get(f"{api}/jobs", headers=headers, timeout=10).status_code != 200:
        wait += 1
        time.sleep(0.5)
    created = requests.post(
        f"{api}/jobs",
        headers=headers,
        json={"name": "headlines", "kind": "scraper", "command": ["python", "-c", code]},
        timeout=30,
    )
    assert created.status_code == 201, created.text

    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.set_default_timeout(30_000)
    log_in(page, hub, "alice")
    page.wait_for_url("**/hub/spawn")
    page.goto(f"{hub.url}/hub/home")
    page.click("text=Services")  # the hub's own Services menu lists the dashboard
    page.click("a.dropdown-item:has-text('jobs')")
    page.wait_for_url("**/services/jobs/")
    row = page.locator("tr[data-name=headlines]")
    assert "scraper" in row.inner_text()

    page.click("a:has-text('headlines')")
    page.wait_for_selector("#log:has-text('page 3')")  # the log updates live
    log = page.locator("#log").inner_text()
    assert '<img src=x onerror="document.title=1">' in log  # shown as text
    assert page.locator("#log img").count() == 0 and page.title() != "1"
    page.screenshot(path=str(SCREENSHOTS / "job-page.png"))

    page.click("button[data-action=stop]")
    page.wait_for_selector("#status:has-text('stopped')")
    job = requests.get(f"{api}/jobs/headlines", headers=headers, timeout=10).json()
    assert job["status"] == "stopped"
    page.close()


def test_notification_settings_are_saved_from_the_dashboard_and_a_refusal_names_the_field(  # type: ignore[no-untyped-def]
    hub: HubProcess, browser
) -> None:
    import requests

    headers = {"Authorization": f"token {api_token(hub, 'bob')}"}
    api = f"{hub.url}/services/jobs/api"
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.set_default_timeout(30_000)
    log_in(page, hub, "bob")
    page.wait_for_url(lambda url: "/hub/login" not in url)  # the spawn page, or a running server
    page.goto(f"{hub.url}/services/jobs/")
    page.click("a.nav-link:has-text('Notifications')")
    page.wait_for_url("**/services/jobs/settings")
    # every event is on until bob says otherwise; local mode allows webhooks to this machine
    page.wait_for_function("document.getElementById('notify-failed').checked")
    page.fill("#notify-email", "bob@example.org")
    page.fill("#notify-webhook", "http://127.0.0.1:9/bob")
    page.uncheck("#notify-succeeded")
    page.uncheck("#notify-quiet")
    page.click("button[type=submit]")
    page.wait_for_selector("#saved:not(.d-none)")
    saved = {
        "email": "bob@example.org",
        "webhook": "http://127.0.0.1:9/bob",
        "events": ["failed", "restarted"],
    }
    assert requests.get(f"{api}/settings", headers=headers, timeout=10).json() == {"notify": saved}

    page.fill("#notify-webhook", "https://elsewhere.example.org/hook")
    page.click("button[type=submit]")
    page.wait_for_selector("#error:not(.d-none)")
    assert "must start with one of the URLs the admin allows" in page.locator("#error").inner_text()
    assert "is-invalid" in (page.get_attribute("#notify-webhook", "class") or "")
    assert requests.get(f"{api}/settings", headers=headers, timeout=10).json() == {"notify": saved}
    page.reload()  # what was saved is what the form shows
    page.wait_for_function("document.getElementById('notify-email').value === 'bob@example.org'")
    assert not page.is_checked("#notify-succeeded") and page.is_checked("#notify-restarted")
    page.close()


def test_the_usage_page_charts_what_ran_and_admins_see_the_spenders(hub: HubProcess, browser) -> None:  # type: ignore[no-untyped-def]
    import requests

    headers = {"Authorization": f"token {api_token(hub, 'alice')}"}
    api = f"{hub.url}/services/jobs/api"
    body = {"name": "costly", "kind": "batch", "command": ["python", "-c", "import time; time.sleep(2)"]}
    assert requests.post(f"{api}/jobs", headers=headers, json=body, timeout=30).status_code in (201, 202)
    for _ in range(120):
        if requests.get(f"{api}/jobs/costly", headers=headers, timeout=10).json()["status"] == "succeeded":
            break
        time.sleep(0.5)
    report = requests.get(f"{api}/usage?by=day,profile", headers=headers, timeout=10).json()
    assert report["total"] > 0 and {row["profile"] for row in report["rows"]} >= {"small"}

    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.set_default_timeout(30_000)
    log_in(page, hub, "alice")
    page.wait_for_url(lambda url: "/hub/login" not in url)
    page.goto(f"{hub.url}/services/jobs/usage")
    page.wait_for_selector("#usage-chart svg rect[data-key=small]")  # drawn in the browser from the API
    assert page.locator("#usage-table tbody tr:has-text('small')").count() == 1
    assert page.locator("#usage-stack option[value=user]").count() == 0  # who spent what: admins only
    with page.expect_download() as download:
        page.click("#usage-csv")
    lines = Path(download.value.path()).read_text().splitlines()
    assert lines[0].startswith("day,profile") and any(",small," in line for line in lines[1:])
    assert page.locator("a.nav-link:has-text('Admin')").count() == 0
    page.close()

    admin = browser.new_page(viewport={"width": 1200, "height": 900})
    admin.set_default_timeout(30_000)
    log_in(admin, hub, "admin")
    admin.wait_for_url(lambda url: "/hub/login" not in url)
    admin.goto(f"{hub.url}/services/jobs/")
    admin.click("a.nav-link:has-text('Admin')")
    admin.wait_for_selector("#admin-spenders")
    assert admin.locator("#admin-spenders tr:has-text('alice')").count() == 1
    assert admin.locator("#admin-groups tr[data-group=researchers]").count() == 1
    admin.goto(f"{hub.url}/services/jobs/usage")
    admin.select_option("#usage-scope", "everyone")
    admin.select_option("#usage-stack", "user")
    admin.wait_for_selector("#usage-chart svg rect[data-key=alice]")
    admin.screenshot(path=str(SCREENSHOTS / "usage-page.png"))
    admin.close()
