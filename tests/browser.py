"""A real browser for the console tests: Debian's Chromium (/usr/bin/chromium, installed by
deploy/install-test-services.sh) driven by Playwright. Set PEFTSERVE_CONSOLE_SCREENSHOTS to a
folder (docs/console) to save a screenshot of each view the tests walk through."""

import os
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
# As the machines' notes say: without the background-networking flags Chromium keeps trying
# hosts this closed network refuses.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 60_000


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)


@contextmanager
def console_page(browser, base_url: str, width: int = 1100):
    context = browser.new_context(viewport={"width": width, "height": 900}, base_url=base_url)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: errors.append(f"unexpected dialog: {d.message}"))  # an alert() would be an XSS
    page.goto("/console/")
    try:
        yield page
    finally:
        context.close()
    assert not errors, errors


def sign_in(page, key: str, role: str = "tenant") -> None:
    page.select_option("select[name=role]", role)
    page.fill("input[name=key]", key)
    page.click("button[type=submit]")
    page.wait_for_selector("#signout:not([hidden])")


def screenshot(page, name: str) -> None:
    folder = os.environ.get("PEFTSERVE_CONSOLE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def wait_until(page, expression: str, timeout_s: float = 60.0) -> None:
    """Poll a JavaScript expression until it is truthy. Playwright's wait_for_function evaluates
    its predicate with eval() inside the page, which the console's CSP forbids; evaluate() does not."""
    import time

    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(f"still false after {timeout_s}s: {expression}")
        time.sleep(0.2)
