"""A headless Chromium driven by selenium, for tests of the pages the product serves.

Debian's `chromium` and `chromium-driver` (the Makefile's `browser` target installs them when
missing). The browser reaches 127.0.0.1 only: every other host resolves to nothing and no
proxy, update check or sync is tried, so a page that fetched anything from the internet would
show it broken. Without Chromium the tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

CHROMEDRIVER = "/usr/bin/chromedriver"
WINDOW = (1400, 1000)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browser_or_skip() -> str:
    """Chromium's path; a skip when it or its driver is missing (a failure under CI=true)."""
    binary = _chromium()
    missing = [name for name, path in (("chromium", binary),
                                       ("chromedriver", shutil.which("chromedriver")
                                        or (CHROMEDRIVER if Path(CHROMEDRIVER).exists() else None)))
               if path is None]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (the dev extra)")
    if missing:
        why = (f"missing {', '.join(missing)}: run 'make browser' (as root) and "
               "'uv pip install -e .[dev]'")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(why)
        pytest.skip(why)
    return binary


def start_chromium(profile: Path):
    """A headless Chromium that can reach 127.0.0.1 and nothing else."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser_or_skip()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--user-data-dir={profile}",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-default-apps", "--no-proxy-server",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
        options.add_argument(arg)
    driver_path = shutil.which("chromedriver") or CHROMEDRIVER
    service = Service(executable_path=driver_path, log_output=os.devnull)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    return driver


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module, closed at its end."""
    browser_or_skip()
    profile = Path(tempfile.mkdtemp(prefix="chromium-"))
    driver = start_chromium(profile)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
