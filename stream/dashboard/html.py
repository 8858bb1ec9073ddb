"""A tiny HTML builder that escapes by construction.

Every value passed to :func:`el` as a child or an attribute is HTML-escaped unless it is
:class:`Markup` — which only this module (and :mod:`stream.dashboard.svg`) produce, from escaped
parts. Element and attribute names are code constants, checked against a strict pattern. So trace
content (span names, messages, explanations, evidence) can only ever reach the page as text.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, urlencode

_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]*$")
_VOID = frozenset({"meta", "link", "br", "hr", "img", "input", "col"})


class Markup(str):
    """A string that is already safe HTML (built from escaped parts)."""

    __slots__ = ()


def esc(value: Any) -> Markup:
    if isinstance(value, Markup):
        return value
    return Markup(html.escape("" if value is None else str(value), quote=True))


def _flatten(children: Iterable[Any]) -> Iterable[Any]:
    for c in children:
        if c is None or c is False:
            continue
        if isinstance(c, (list, tuple)) or (hasattr(c, "__next__")):
            yield from _flatten(c)
        else:
            yield c


def join(children: Iterable[Any]) -> Markup:
    return Markup("".join(esc(c) for c in _flatten(children)))


def attrs(**kw: Any) -> str:
    """``class_`` → ``class``, ``data_x`` → ``data-x``; None/False omitted, True → bare attribute."""
    out = []
    for key, value in kw.items():
        if value is None or value is False:
            continue
        name = key.rstrip("_").replace("_", "-")
        if not _NAME.match(name):
            raise ValueError(f"bad attribute name {name!r}")
        out.append(f" {name}" if value is True else f' {name}="{esc(value)}"')
    return "".join(out)


def el(tag: str, /, *children: Any, **kw: Any) -> Markup:
    """``<tag attrs>children</tag>``: children and attribute values escaped unless :class:`Markup`."""
    if not _NAME.match(tag):
        raise ValueError(f"bad element name {tag!r}")
    if tag in _VOID:
        return Markup(f"<{tag}{attrs(**kw)}>")
    return Markup(f"<{tag}{attrs(**kw)}>{join(children)}</{tag}>")


def href(path: str, **params: Any) -> str:
    """A URL with a percent-encoded path and query (escaped again when put in an attribute)."""
    url = quote(path, safe="/")
    query = {k: v for k, v in params.items() if v is not None}
    return f"{url}?{urlencode(query)}" if query else url


def table(headers: Iterable[Any], rows: Iterable[Iterable[Any]], empty: str = "no data yet", **kw: Any) -> Markup:
    body = [el("tr", *(el("td", c) for c in r)) for r in rows]
    if not body:
        return el("p", empty, class_="empty")
    return el("table", el("thead", el("tr", *(el("th", h) for h in headers))), el("tbody", body), **kw)
