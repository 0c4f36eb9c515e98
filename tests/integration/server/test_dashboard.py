"""The admin dashboard in a real headless Chromium (issue 13 §4): sign in with the
token, see the live numbers move with traffic, watch an attack's block appear and lift
it with its button, add a deny rule, switch to Chinese; screenshots are saved as test
artifacts (``$VEIL_TEST_ARTIFACTS``, else the test's temporary directory), and with
``VEIL_DOCS_SCREENSHOT=1`` the English one is copied to docs/dashboard.png.

The browser is Debian's ``chromium`` (``/usr/bin/chromium``) driven by Playwright. When
it is missing the test installs it with apt-get if it runs as root, and is otherwise
skipped by name with the reason — never passed without a browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.server.admin_helpers import (
    admin_of,
    api,
    eventually,
    scan_routes,
)
from tests.integration.server.harness import ServerProcess, register, send_sealed

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-dev-shm-usage"]
DOCS = Path(__file__).resolve().parents[3] / "docs"

async_api = pytest.importorskip("playwright.async_api",
                                reason="playwright is not installed (pip install playwright)")


def chromium() -> Path:
    """Debian's Chromium, installed first when missing and this test runs as root."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "chromium"], check=False,
                       capture_output=True, timeout=900)
        if CHROMIUM.exists():
            return CHROMIUM
    pytest.skip("test_dashboard: no Chromium at /usr/bin/chromium and it cannot be "
                "installed here (apt-get install chromium needs root)")


def artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("VEIL_TEST_ARTIFACTS") or tmp_path) / "dashboard"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    executable = chromium()
    async with async_api.async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(executable),
                                                    args=FLAGS, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


async def traffic(url: str, stop: asyncio.Event) -> None:
    """A steady trickle of ordinary requests from 127.0.0.1 until ``stop``."""
    async with aiohttp.ClientSession() as http:
        alice = await register(http, url, username="dash_alice")
        bob = await register(http, url, username="dash_bob")
        while not stop.is_set():
            await send_sealed(http, url, bob, {bob.device_id: os.urandom(48)})
            async with http.get(url + "/v1/accounts/me", headers=alice.auth()) as r:
                await r.read()
            # Bob fetches and acknowledges now and then: the "delivered" count moves.
            async with http.get(url + "/v1/messages", headers=bob.auth()) as r:
                queued = (await r.json()).get("messages", [])
            for message in queued[:5]:
                async with http.delete(f"{url}/v1/messages/{message['id']}",
                                       headers=bob.auth()) as r:
                    await r.read()
            await asyncio.sleep(0.02)


async def number(page: Any, selector: str) -> float | None:
    text = (await page.text_content(selector) or "").replace(",", "").strip()
    try:
        return float(text)
    except ValueError:
        return None


async def test_the_dashboard_in_chromium(browser: Any, tmp_path: Path) -> None:
    out = artifacts(tmp_path)
    server = ServerProcess(tmp_path / "data").start()
    stop = asyncio.Event()
    load = asyncio.create_task(traffic(server.url, stop))
    try:
        admin = admin_of(server)
        context = await browser.new_context(viewport={"width": 1360, "height": 900},
                                            locale="en-US",
                                            extra_http_headers={"Accept-Language": "en"})
        page = await context.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("request", lambda r: problems.append("remote: " + r.url)
                if not r.url.startswith(admin.url) else None)

        # Sign in: a wrong token is refused, the right one opens the dashboard.
        await page.goto(admin.url + "/admin/")
        await page.fill("#token", "not-the-token")
        await page.click("#login")
        await page.wait_for_selector(".error")
        problems.clear()  # the browser reports the refused sign-in's 401 itself
        await page.fill("#token", admin.token)
        await page.click("#login")
        await page.wait_for_selector("#live:not(.off)", timeout=15_000)
        cookies = {c["name"]: c for c in await context.cookies()}
        assert cookies["veil_admin"]["httpOnly"] and cookies["veil_admin"]["sameSite"] == "Strict"

        # Live numbers move with the traffic.
        async def moving() -> bool:
            rate = await number(page, "#rate")
            stored = await number(page, "#stored")
            delivered = await number(page, "#delivered")
            p99 = await number(page, "#p99")
            return bool(rate and rate > 0 and stored and stored > 0 and delivered
                        and p99 is not None)

        await eventually(moving, what="live numbers on the page")
        first = await number(page, "#stored")
        await eventually(lambda: _above(page, "#stored", first), what="the count to grow")

        # An attack from 127.0.0.2: its block appears on the page.
        await scan_routes(server.url)
        row = await page.wait_for_selector("#blocks tbody tr", timeout=15_000)
        block_id = await row.get_attribute("data-id")
        await page.wait_for_selector("#alerts tbody tr")
        await page.wait_for_timeout(2500)  # two more frames: the charts have a line
        await page.screenshot(path=str(out / "dashboard-en.png"), full_page=True)
        if os.environ.get("VEIL_DOCS_SCREENSHOT") == "1":
            shutil.copyfile(out / "dashboard-en.png", DOCS / "dashboard.png")

        # Lift it with its button (a POST with the session's CSRF header).
        await page.click(f'#blocks button.lift[data-id="{block_id}"]')
        await page.wait_for_selector("#message:not([hidden])")
        assert "lifted" in (await page.text_content("#message") or "")
        async with aiohttp.ClientSession() as http:
            _, body = await api(http, admin, "GET", "/admin/api/blocks")
            assert all(b["id"] != block_id for b in body["blocks"])
        await page.wait_for_function(
            "id => !document.querySelector(`#blocks tr[data-id=\"${id}\"]`)", arg=block_id)

        # A deny rule from the form.
        await page.fill("#deny-cidr", "198.51.100.0/24")
        await page.click("#deny-submit")
        await page.wait_for_selector("#rules li:has-text('198.51.100.0/24')")
        async with aiohttp.ClientSession() as http:
            _, body = await api(http, admin, "GET", "/admin/api/deny")
            assert "198.51.100.0/24" in body["rules"]

        # Chinese with the toggle, kept across a reload (the cookie).
        await page.click("#lang")
        assert await page.text_content("h1") == "Veil 管理控制台"
        assert await page.text_content("#card-traffic h3") == "每秒请求数"
        assert await page.get_attribute("html", "lang") == "zh-CN"
        await page.wait_for_timeout(1200)
        await page.screenshot(path=str(out / "dashboard-zh.png"), full_page=True)
        await page.reload()
        await page.wait_for_selector("#live:not(.off)")
        assert await page.text_content("#lang") == "English"
        await page.click("#lang")
        assert await page.text_content("h1") == "Veil admin"

        # A browser that asks for Chinese gets the sign-in form in Chinese.
        zh = await browser.new_context(locale="zh-CN",
                                       extra_http_headers={"Accept-Language": "zh-CN,zh;q=0.9"})
        zh_page = await zh.new_page()
        await zh_page.goto(admin.url + "/admin/")
        assert await zh_page.text_content("#login") == "登录"
        await zh_page.screenshot(path=str(out / "login-zh.png"))
        await zh.close()
        await context.close()
        assert problems == [], problems
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await load
        server.stop()


async def _above(page: Any, selector: str, value: float | None) -> bool:
    now = await number(page, selector)
    return now is not None and value is not None and now > value
