"""Auditing dashboard pages for markup smuggled in by trace content (used by the hostile-strings
scenario): an HTML parser flags injected tags, ``on*`` attributes, ``javascript:`` URLs, comments
and declarations; chromium checks that no script runs."""

from __future__ import annotations

import re
from collections.abc import Callable
from html.parser import HTMLParser

import httpx
import pytest

from tests.stream.dashboard.test_browser import ARGS, CHROMIUM

UNSAFE_TAGS = {"script", "img", "iframe", "object", "embed", "textarea", "style", "form", "input", "base",
               "frame", "frameset", "template", "noscript", "xmp", "plaintext", "b", "video", "audio"}  # fmt: skip


class Audit(HTMLParser):
    """Markup a hostile string could have smuggled in, and the page's text (entities decoded)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.unsafe: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in UNSAFE_TAGS:
            self.unsafe.append(f"<{tag}>")
        for name, value in attrs:
            if name.startswith("on") or (value or "").strip().lower().startswith("javascript:"):
                self.unsafe.append(f"<{tag} {name}={value!r}>")

    def handle_endtag(self, tag: str) -> None:
        if tag in UNSAFE_TAGS:
            self.unsafe.append(f"</{tag}>")

    def handle_comment(self, data: str) -> None:
        self.unsafe.append(f"<!--{data[:40]}")

    def unknown_decl(self, data: str) -> None:
        self.unsafe.append(f"<![{data[:40]}")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


RAW = re.compile(r"[<>&\"']")


def clip(s: str, n: int) -> str:  # as the dashboard shortens text
    return s if len(s) <= n else s[: n - 1] + "…"


def audit_page(url: str, texts: list[str], shown: Callable[[str], list[str]]) -> tuple[list[str], list[str]]:
    """(unsafe renders, strings missing from the page's text) for one page; ``shown(page)`` lists
    the strings the page must show as text."""
    resp = httpx.get(url, timeout=60)
    assert resp.status_code == 200, url
    csp = resp.headers.get("content-security-policy", "")
    unsafe = [] if "default-src 'none'" in csp and "unsafe-" not in csp else [f"{url}: CSP {csp!r}"]
    page = resp.text
    a = Audit()
    a.feed(page)
    a.close()
    unsafe += [f"{url}: {u}" for u in a.unsafe]
    unsafe += [f"{url}: raw {h[:60]!r}" for h in texts if RAW.search(h) and h in page]
    unsafe += [f"{url}: raw <script" for _ in re.finditer(r"<script", page, re.I)]
    text = "".join(a.text)
    return unsafe, [f"{url}: {s[:60]!r}" for s in shown(page) if s not in text]


def browse(base: str, paths: list[str]) -> tuple[int, int, list[str]]:
    """Load pages in chromium: (pages, scripts run or dialogs opened, console errors)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    ran, errors = 0, []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            for path in paths:
                assert page.goto(base + path).status == 200
                ran += page.evaluate("typeof window.__pwned !== 'undefined'")
            ran += len(dialogs)
        finally:
            browser.close()
    return len(paths), ran, errors
