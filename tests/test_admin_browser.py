"""The admin page in a real browser: Playwright drives Debian's Chromium headless (no browser
download: `executable_path`). Logs in, reads the overview after some traffic, filters the
request log, opens a request, reloads the configuration and runs the "try it" form.

Skipped when Chromium (or the playwright package) is missing, unless
P5PROXY_REQUIRE_BROWSER=1 (set by .ci/run), which turns the skip into a failure.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.admin_support import (ADMIN_KEY, CLIENT_KEY, AdminGateway, send_traffic,
                                 start_admin_gateway, wait_rows)
from tests.fakes.replies import Reply

CHROMIUM = os.environ.get("P5PROXY_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = os.environ.get("P5PROXY_BROWSER_SCREENSHOTS")   # a folder: save a PNG of each page


async def shot(page: Any, name: str) -> None:
    if SHOTS:
        await page.screenshot(path=str(Path(SHOTS) / f"admin-{name}.png"), full_page=True)


def _browser_or_skip() -> Any:
    missing = None
    try:
        from playwright.async_api import async_playwright
    except ImportError as exc:
        missing = f"the playwright package is not installed ({exc})"
    if missing is None and not os.access(CHROMIUM, os.X_OK):
        missing = f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    if missing is not None:
        if os.environ.get("P5PROXY_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser test required (P5PROXY_REQUIRE_BROWSER=1): {missing}")
        pytest.skip(missing)
    return async_playwright


@pytest.fixture
async def gw(aiohttp_server: Any, tmp_path: Path, fake_openai: Any,
             fake_anthropic: Any) -> AdminGateway:
    return await start_admin_gateway(aiohttp_server, tmp_path, fake_openai, fake_anthropic,
                                     auth={"keys": [CLIENT_KEY]})


@pytest.mark.timeout(120)
async def test_admin_page_in_chromium(gw: AdminGateway, fake_openai: Any) -> None:
    async_playwright = _browser_or_skip()
    fake = fake_openai[0]
    await send_traffic(gw, fake)
    await wait_rows(gw, 8)
    problems: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            context = await browser.new_context()
            page = await context.new_page()
            page.set_default_timeout(20_000)
            # every console error (a script blocked by the Content-Security-Policy, a JS
            # exception) fails the test; but the wrong key's 401 below is expected
            page.on("console", lambda m: problems.append(m.text) if m.type == "error"
                    and "status of 401" not in m.text else None)
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            page.on("dialog", lambda dialog: dialog.accept())   # the reload confirmation

            # not logged in: the login form; a wrong key is refused
            await page.goto(gw.url + "/admin/log")
            assert "/admin/login" in page.url
            await page.fill("input[name=key]", CLIENT_KEY)
            await page.click("#login button[type=submit]")
            assert "Wrong admin key" in await page.text_content("main")
            await page.fill("input[name=key]", ADMIN_KEY)
            await page.click("#login button[type=submit]")
            await page.wait_for_url("**/admin/log")
            cookies = await context.cookies()
            session = [c for c in cookies if c["name"] == "p5proxy_admin"]
            assert session and session[0]["httpOnly"] and session[0]["sameSite"] == "Strict"

            # the overview after the traffic
            await page.click("header >> text=Overview")
            await page.wait_for_url("**/admin")
            assert (await page.text_content("#tile-requests b")) == "8"
            assert (await page.text_content("#tile-success b")) == "75.0 %"
            assert await page.locator(".chart svg").count() == 6
            assert await page.locator("#chart-rpm svg rect").count() >= 1
            await shot(page, "overview")
            await page.click("text=15m")
            await page.wait_for_url("**/admin?window=15m")
            assert (await page.text_content("#tile-requests b")) == "8"
            await page.check("#autorefresh")   # the little script runs (CSP nonce)
            assert await page.evaluate("localStorage.getItem('p5proxy-autorefresh')") == "1"
            await page.uncheck("#autorefresh")

            # the request log, filtered
            await page.click("header >> text=Request log")
            await page.wait_for_url("**/admin/log")
            assert (await page.text_content("#log-total")) == "8 requests"
            await page.fill("#log-filter input[name=model]", "gpt-4o")
            await page.select_option("#log-filter select[name=status]", "ok")
            await page.click("#log-filter button[type=submit]")
            await page.wait_for_url("**/admin/log?*model=gpt-4o*")
            assert (await page.text_content("#log-total")) == "4 requests"
            models = await page.locator("#log .model").all_text_contents()
            assert models == ["gpt-4o"] * 4
            await shot(page, "log")
            await page.select_option("#log-filter select[name=status]", "error")
            await page.fill("#log-filter input[name=model]", "")
            await page.click("#log-filter button[type=submit]")
            await page.wait_for_url("**status=error*")
            assert (await page.text_content("#log-total")) == "2 requests"
            # the script-like model name is shown as text, not run
            assert "<script>alert(1)</script>" in await page.locator("#log .model").all_text_contents()
            await page.locator("#log a[href^='/admin/log/']").first.click()
            await page.wait_for_url("**/admin/log/*")
            assert "exploded" in (await page.text_content("#error-message") or "")

            # providers: masked keys only
            await page.click("header >> text=Providers and keys")
            text = await page.text_content("main") or ""
            assert "sk-upstream-openai" not in text and "****" in text
            assert await page.locator("#provider-oa").count() == 1
            await shot(page, "providers")

            # configuration: reload after adding a model
            gw.rewrite(lambda cfg: cfg["models"].update({"gpt-added": {"provider": "oa"}}))
            await page.click("header >> text=Configuration")
            assert CLIENT_KEY not in (await page.text_content("#config") or "")
            await page.click("#reload")
            await page.wait_for_selector("#reload-result")
            result = await page.text_content("#reload-result") or ""
            assert "Configuration reloaded" in result and "gpt-added" in result
            await shot(page, "config")

            # try it: the new model, through the gateway
            fake.replies.append(Reply(text="Hello from the browser test", chunk_size=6))
            await page.click("header >> text=Try it")
            await page.select_option("#try select[name=model]", "gpt-added")
            await page.fill("#try textarea[name=prompt]", "Say hello")
            await page.click("#try button[type=submit]")
            await page.wait_for_selector("#try-answer")
            assert (await page.text_content("#try-answer")) == "Hello from the browser test"
            assert fake.last.json["model"] == "gpt-added"
            assert (await page.text_content("#try-result")) is not None
            await shot(page, "try")

            # log out: the session is gone
            await page.click("header button[type=submit]")
            await page.wait_for_url("**/admin/login")
            await page.goto(gw.url + "/admin")
            assert "/admin/login" in page.url
        finally:
            await browser.close()
    assert problems == []
