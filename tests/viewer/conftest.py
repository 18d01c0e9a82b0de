"""Fixtures of the browser tests: headless Chromium driven by Playwright (skipped where no Chromium is installed)."""

from __future__ import annotations

import pytest
from viewer_browser import CHROMIUM_ARGS, find_chromium


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium (the system's, never a downloaded one), shared by the browser tests."""
    executable = find_chromium()
    if executable is None:
        pytest.skip("no Chromium binary found (install Debian's `chromium` package, as .ci/run does, or set "
                    "NS_DIFFUSION_CHROMIUM to a Chromium executable)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()

