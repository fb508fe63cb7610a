"""A minimal headless-Chromium driver over the DevTools protocol (CDP), standard library only.

Chromium is started with ``--remote-debugging-pipe``: CDP messages are JSON
terminated by a NUL byte, written to the browser's fd 3 and read from its fd 4.
No port is opened, nothing is downloaded (no Selenium Manager, no
``playwright install``): the browser is Debian's ``chromium`` package.

    >>> with Chromium() as browser:                                 # doctest: +SKIP
    ...     page = browser.open("file:///tmp/report.html")
    ...     page.evaluate("document.title"), page.errors, page.requests
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("LOGITSHIFT_CHROMIUM", "/usr/bin/chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--mute-audio",
    "--remote-debugging-pipe",
)


def available() -> bool:
    return shutil.which(CHROMIUM) is not None or Path(CHROMIUM).is_file()


class CDPError(RuntimeError):
    pass


class Chromium:
    """One headless browser with a fresh, empty profile; use as a context manager."""

    def __init__(self, executable: str = CHROMIUM, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="logitshift-chromium-")
        to_browser_r, self._w = os.pipe()
        self._r, from_browser_w = os.pipe()

        def child() -> None:  # runs in the forked child: put the pipe ends at fd 3 and 4
            a = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,
            preexec_fn=child,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next = 0
        self._lock = threading.Condition()
        self._responses: dict[int, dict] = {}
        self.events: list[dict] = []
        self._closed = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.version = self.send("Browser.getVersion")

    # -- transport -------------------------------------------------------------
    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._r, 1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                with self._lock:
                    self._closed = True
                    self._lock.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                with self._lock:
                    if "id" in msg:
                        self._responses[msg["id"]] = msg
                    else:
                        self.events.append(msg)
                    self._lock.notify_all()

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        with self._lock:
            self._next += 1
            ident = self._next
        msg: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        with self._lock:
            while ident not in self._responses:
                if self._closed:
                    raise CDPError(f"{method}: the browser exited")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CDPError(f"{method}: no answer in {self.timeout} s")
                self._lock.wait(left)
            reply = self._responses.pop(ident)
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait_event(self, method: str, session: str | None = None, since: int = 0, timeout: float | None = None) -> dict:
        deadline = time.monotonic() + (timeout or self.timeout)
        with self._lock:
            while True:
                for ev in self.events[since:]:
                    if ev.get("method") == method and (session is None or ev.get("sessionId") == session):
                        return ev
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise CDPError(f"no {method} event in time")
                self._lock.wait(left)

    # -- pages -----------------------------------------------------------------
    def open(self, url: str, width: int = 1440, height: int = 900) -> Page:
        """Open ``url`` in a new tab of ``width``×``height`` CSS px and wait for its load event."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session, target)
        page.url = url
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        self.send(
            "Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session
        )
        page.mark = len(self.events)
        start = time.perf_counter()
        reply = self.send("Page.navigate", {"url": url}, session)
        if reply.get("errorText"):
            raise CDPError(f"navigate {url}: {reply['errorText']}")
        self.wait_event("Page.loadEventFired", session, since=page.mark)
        page.load_seconds = time.perf_counter() - start
        return page

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                try:
                    self.send("Browser.close")
                except CDPError:
                    pass
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        finally:
            for fd in (self._w, self._r):
                try:
                    os.close(fd)
                except OSError:
                    pass
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Page:
    """A tab: evaluate JavaScript, take screenshots, and see its console errors and network requests."""

    def __init__(self, browser: Chromium, session: str, target: str) -> None:
        self.browser, self.session, self.target = browser, session, target
        self.mark = 0
        self.url = ""
        self.load_seconds = float("nan")

    def _events(self) -> list[dict]:
        with self.browser._lock:
            return [e for e in self.browser.events[self.mark :] if e.get("sessionId") == self.session]

    def evaluate(self, expression: str, await_promise: bool = False) -> Any:
        r = self.browser.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": await_promise}, self.session
        )
        if "exceptionDetails" in r:
            raise CDPError(f"{expression[:60]}: {r['exceptionDetails'].get('exception', {}).get('description', r['exceptionDetails'])}")
        return r.get("result", {}).get("value")

    @property
    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and browser log errors (CSP violations, failed loads)."""
        out = []
        for e in self._events():
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append(
                    "exception: "
                    + str(
                        p.get("exceptionDetails", {}).get("exception", {}).get("description") or p.get("exceptionDetails", {}).get("text")
                    )
                )
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console.error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(f"log ({p['entry'].get('source')}): {p['entry'].get('text')} {p['entry'].get('url', '')}")
        return out

    @property
    def requests(self) -> list[str]:
        """URLs the page asked for, except the page itself and ``data:`` URIs (which never touch a network)."""
        out = []
        for e in self._events():
            if e.get("method") == "Network.requestWillBeSent":
                url = e["params"]["request"]["url"]
                if not url.startswith("data:") and url != self.url:
                    out.append(url)
        return out

    def screenshot(self, path: str | os.PathLike, full_page: bool = False) -> Path:
        """A PNG of the viewport, or of the whole page (up to 16000 px high) with ``full_page``."""
        self.evaluate("Promise.all(Array.from(document.images).map(i => i.decode().catch(() => 0)))", await_promise=True)
        if full_page:
            w, h, vw, vh = self.evaluate(
                "[document.documentElement.scrollWidth, document.documentElement.scrollHeight, innerWidth, innerHeight]"
            )
            self.browser.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": vw, "height": min(h, 16000), "deviceScaleFactor": 1, "mobile": False},
                self.session,
            )
            self.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))", await_promise=True)
        try:
            data = self.browser.send("Page.captureScreenshot", {"format": "png"}, self.session)["data"]
        finally:
            if full_page:
                self.browser.send(
                    "Emulation.setDeviceMetricsOverride", {"width": vw, "height": vh, "deviceScaleFactor": 1, "mobile": False}, self.session
                )
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        self.browser.send("Target.closeTarget", {"targetId": self.target})

    def pdf(self, path: str | os.PathLike) -> Path:
        data = self.browser.send("Page.printToPDF", {"printBackground": True, "preferCSSPageSize": True}, self.session)["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path
