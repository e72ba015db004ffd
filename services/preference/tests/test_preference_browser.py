"""End to end in a real headless browser (Debian's chromium driven by Playwright): the service started with the
README's command in a child process, three simulated raters on their own pages, the server SIGKILLed while a vote is
in flight and restarted on the same database, then the operator page showing the results."""

from __future__ import annotations

import io
import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[3]
README = Path(__file__).resolve().parents[1] / "README.md"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ADMIN = "browser-test-admin-token-0123456789"
CRITERIA = ("overall", "prompt", "aesthetics")
SCREENSHOT_ENV = "INFINITY_PREFERENCE_SCREENSHOT"
"""Set to a path to keep the operator page's screenshot with the results."""


def readme_serve_command() -> list[str]:
    """The README's one-command start (its first `uv run infinity-preference serve ...` line), as argv."""
    line = re.search(r"^uv run (infinity-preference serve [^\n]*)$", README.read_text(), flags=re.M).group(1)
    return shlex.split(line.split("#")[0])


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """The README's serve command with --db and --port replaced, in a child process."""

    def __init__(self, db: Path, port: int, log: Path) -> None:
        argv = readme_serve_command()
        assert argv[:2] == ["infinity-preference", "serve"] and "--db" in argv and "--port" in argv
        argv[argv.index("--db") + 1] = f"sqlite:///{db}"
        argv[argv.index("--port") + 1] = str(port)
        self.argv = [str(Path(sys.executable).parent / argv[0]), *argv[1:]]  # what `uv run` executes
        self.url, self.log, self.proc = f"http://127.0.0.1:{port}", log, None

    def start(self) -> None:
        env = {**os.environ, "INFINITY_PREFERENCE_ADMIN_TOKEN": ADMIN}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "service not ready in 60 s"
            time.sleep(0.2)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(timeout=30) == -signal.SIGKILL

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(method, self.url + path, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30,
                                 **kwargs)  # fmt: skip
        assert response.is_success, response.text
        return response.json()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data" / "study.db", _free_port(), tmp_path / "server.log")
    srv.start()
    try:
        yield srv
    finally:
        if srv.proc.poll() is None:
            srv.proc.send_signal(signal.SIGTERM)  # graceful: exit code 0
            assert srv.proc.wait(timeout=30) == 0, srv.log.read_text()[-3000:]


def _red_side(page: Any, base: str) -> str:
    """A simulated rater's eye: which side shows the red model's image."""
    reds = {}
    for side in ("left", "right"):
        src = page.get_by_test_id(f"{side}-image").get_attribute("src")
        pixels = np.asarray(Image.open(io.BytesIO(httpx.get(base + src, timeout=30).content)).convert("RGB"))
        reds[side] = pixels[..., 0].mean()
    return max(reds, key=reds.get)


def _answer(page: Any, base: str, prefer: str) -> None:
    """Pick ``prefer`` ("red" or "blue") on all three criteria and submit."""
    red = _red_side(page, base)
    side = red if prefer == "red" else {"left": "right", "right": "left"}[red]
    for criterion in CRITERIA:
        page.get_by_test_id(f"{criterion}-{side}").check()
    page.get_by_test_id("submit").click()


def _rate(page: Any, base: str, prefer: str) -> None:
    """Rate the page's pair and wait until the next one (or the end) is shown."""
    before = int(page.get_by_test_id("rated").inner_text())
    _answer(page, base, prefer)
    page.wait_for_function(f"document.getElementById('rated').textContent === '{before + 1}'")
    page.wait_for_selector("body[data-state='rating'], body[data-state='done']")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_raters_in_a_browser_survive_a_server_kill(server: Server, two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (Debian package `chromium`; .ci/install-system-deps installs it)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright missing: uv sync (infinity-preference[browser])"
    )
    prefer = {"ann": "red", "bob": "blue", "cy": "red"}  # any two of them outvote bob: red wins every pair
    with sync_api.sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        except Exception as err:  # any launch failure means no usable browser here
            pytest.skip(f"chromium cannot be launched: {str(err).splitlines()[0]}")
        try:
            # the operator: token, a new study from the two eval runs, three raters invited by name
            admin = browser.new_page(viewport={"width": 1200, "height": 1000})
            admin.set_default_timeout(60_000)
            admin.goto(f"{server.url}/admin")
            admin.get_by_test_id("token").fill(ADMIN)
            admin.get_by_test_id("login").click()
            admin.get_by_test_id("study-name").fill("red vs blue")
            admin.get_by_test_id("study-runs").fill(f"red-model={two_runs[0]}\nblue-model={two_runs[1]}")
            admin.get_by_test_id("create").click()
            admin.get_by_test_id("status").filter(has_text="with 4 pairs").wait_for()
            (study,) = server.admin("GET", "/api/admin/studies")
            admin.get_by_test_id("rater-names").fill("ann, bob, cy")
            admin.get_by_test_id("invite").click()
            admin.locator("#links li").nth(2).wait_for()
            raters = []
            for line in admin.locator("#links li").all_inner_texts():
                name, link = line.split(": ", 1)
                assert link.startswith(f"{server.url}/rate/")
                raters.append({"name": name, "link": link})
            assert [r["name"] for r in raters] == ["ann", "bob", "cy"]

            pages, errors = {}, []
            for rater in raters:  # one browser context each: separate storage, like separate people
                page = browser.new_context().new_page()
                page.set_default_timeout(60_000)
                page.on("pageerror", lambda err: errors.append(str(err)))
                page.goto(rater["link"])
                page.wait_for_selector("body[data-state='rating']")
                pages[rater["name"]] = page
            # the rater sees a prompt and two opaque images, never a model name or a file
            html = pages["ann"].content()
            assert pages["ann"].get_by_test_id("prompt").inner_text()
            assert not any(s in html for s in ("red-model", "blue-model", str(two_runs[0]), ".png"))

            _rate(pages["ann"], server.url, "red")
            _rate(pages["ann"], server.url, "red")
            _rate(pages["bob"], server.url, "blue")
            before = server.admin("GET", f"/api/admin/studies/{study['id']}")["progress"]
            assert (before["ratings"], before["votes"]) == (3, 9)

            # Bob's next vote reaches the server and is committed, then the server dies before answering.
            committed = []

            def commit_then_kill(route: Any) -> None:
                committed.append(route.fetch().json())
                server.kill()
                route.abort("connectionreset")

            bob = pages["bob"]
            bob.route("**/votes", commit_then_kill)
            _answer(bob, server.url, "blue")
            bob.wait_for_selector("body[data-state='retrying']")  # the page keeps the vote and retries
            bob.unroute("**/votes")
            assert committed == [{"status": "recorded"}] and server.proc.poll() is not None

            server.start()  # same database, same port
            bob.wait_for_selector("body[data-state='rating'], body[data-state='done']")  # its retry went through
            after = server.admin("GET", f"/api/admin/studies/{study['id']}")["progress"]
            assert (after["ratings"], after["votes"]) == (4, 12)  # nothing committed was lost, the retry counted once
            assert bob.get_by_test_id("rated").inner_text() == "2"

            # everyone rates until nothing is left (a reload of the page on the way changes nothing)
            pages["cy"].reload()
            pages["cy"].wait_for_selector("body[data-state='rating']")
            while any(p.evaluate("document.body.dataset.state") == "rating" for p in pages.values()):
                for name, page in pages.items():
                    if page.evaluate("document.body.dataset.state") == "rating":
                        _rate(page, server.url, prefer[name])
            assert all(
                p.get_by_test_id("status").inner_text().startswith("All pairs are rated") for p in pages.values()
            )
            assert not errors, errors

            summary = server.admin("GET", f"/api/admin/studies/{study['id']}")
            progress = summary["progress"]
            assert progress["pairs_complete"] == progress["pairs"] == 4
            assert progress["votes"] == 3 * progress["ratings"] == 3 * sum(r["rated"] for r in summary["raters"])
            with sqlite3.connect(tmp_path / "data" / "study.db") as db:
                (distinct,) = db.execute(
                    "SELECT COUNT(*) FROM (SELECT DISTINCT pair_id, rater_id, criterion FROM votes)"
                ).fetchone()
                (total,) = db.execute("SELECT COUNT(*) FROM votes").fetchone()
            assert distinct == total == progress["votes"]

            # back on the operator page (it refreshes itself): the study's progress, then the results
            row = admin.locator(f"tr[data-study='{study['id']}']", has_text="4 / 4")
            row.wait_for()  # the table refreshes itself every 3 s
            assert (
                "red-model vs blue-model" in row.inner_text()
                and ", ".join(f"{r['name']} ({r['rated']})" for r in summary["raters"]) in row.inner_text()
            )
            admin.get_by_test_id(f"open-{study['id']}").click()
            admin.get_by_test_id("show-results").click()
            table = admin.get_by_test_id("comparison")
            table.wait_for()
            for criterion in CRITERIA:
                cells = table.locator("tr", has_text=criterion).locator("td").all_inner_texts()
                assert cells == [criterion, "4", "100.0% [100.0%, 100.0%]", "0.0% [0.0%, 0.0%]", "0.0% [0.0%, 0.0%]"]
            assert admin.get_by_test_id("agreement").locator("tr").count() == 4
            shot = tmp_path / "operator.png"
            admin.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    if os.environ.get(SCREENSHOT_ENV):
        shutil.copyfile(shot, os.environ[SCREENSHOT_ENV])
