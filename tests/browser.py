"""Driving real web UIs in Debian's headless Chromium (Playwright, no downloaded browser)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PLATFORM_DAGS = ("batch_views", "batch_recompute", "lake_maintenance")
RECOMPUTE_DOC = "Lambda's answer to a bug in view logic"  # a line of dags/batch_recompute.py's doc_md
RUN_PAGE = re.compile(r"/dags/batch_recompute/runs/(?P<run_id>[^/?#]+)$")


@contextmanager
def browser_page(screenshot: Path) -> Iterator[Page]:
    """A fresh headless Chromium page; what it shows last is saved to ``screenshot`` (also on failure)."""
    assert shutil.which("chromium") == CHROMIUM, "Debian's chromium package is needed (./dev test installs it)"
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        try:
            yield page
        finally:
            page.screenshot(path=str(screenshot))
            browser.close()


def log_in_to_airflow(page: Page, url: str, password: str) -> None:
    """Sign in as admin and see the platform's DAGs listed."""
    page.goto(f"{url}/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"^(?!.*/auth/login).*$"))
    page.goto(f"{url}/dags")
    for dag in PLATFORM_DAGS:
        expect(page.get_by_role("link", name=dag, exact=True)).to_be_visible(timeout=60_000)


def trigger_recompute(url: str, password: str, day: str, screenshot: Path) -> str:
    """Log in, see the platform's DAGs and the recompute DAG's docs, trigger it for ``day``.

    Returns the run id the UI shows; the page is saved to ``screenshot``.
    """
    with browser_page(screenshot) as page:
        log_in_to_airflow(page, url, password)
        page.get_by_role("link", name="batch_recompute", exact=True).click()
        page.get_by_test_id("markdown-button").click()
        expect(page.get_by_text(RECOMPUTE_DOC)).to_be_visible()
        page.keyboard.press("Escape")

        page.get_by_test_id("trigger-dag-button").click()
        dialog = page.get_by_role("dialog")
        days = dialog.locator("input[type=date]")  # the first_day / last_day params form
        expect(days).to_have_count(2)
        days.nth(0).fill(day)
        days.nth(1).fill(day)
        dialog.get_by_role("button", name="Trigger").click()
        page.wait_for_url(RUN_PAGE, timeout=30_000)
        expect(page.get_by_text("Dag run has been successfully triggered")).to_be_visible()
        match = RUN_PAGE.search(page.url)
        assert match is not None
        return match["run_id"]
