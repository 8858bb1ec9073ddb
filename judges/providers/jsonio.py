"""JSON of provider calls, by orjson (several times faster than the stdlib ``json`` on prompt-sized
documents: the request body is most of a call's bytes) wherever it gives exactly what ``json`` gives,
and by ``json`` everywhere else.

* :func:`dumps_body` is httpx's ``json=`` encoding, byte for byte: ``json.dumps(ensure_ascii=False,
  separators=(",", ":"), allow_nan=False)`` in UTF-8. orjson writes every string, integer, bool and
  null the same way, and floats too except those of magnitude below 1e-4 (``9.99e-05`` vs
  ``0.0000999``); it writes NaN/infinity as null (json refuses them) and refuses integers past 64
  bits, non-str keys and lone surrogates. So a body holding a float it could spell differently, a
  non-finite one or anything but plain str/int/float/bool/None/list/tuple/dict takes the json path,
  as does one orjson refuses (which json then encodes, or refuses with the very error httpx would
  raise).
* :func:`loads` is ``json.loads``: orjson reads the same values, except that integers past 64 bits
  become floats (so a document with a run of 19 digits is read by json) and it refuses NaN,
  infinities, lone surrogates, a BOM and UTF-16/32 (then json decides, with its errors). json
  raises ``RecursionError`` on deep nesting where orjson may not: a document with more than
  ``MAX_ORJSON_NESTING`` brackets is read by json too.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_json_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
MAX_ORJSON_NESTING = 200
_LONG_DIGITS = re.compile(rb"\d{19}")
_LONG_DIGITS_STR = re.compile(r"\d{19}")


def _same_spelling(o: Any) -> bool:
    """No float in ``o`` that orjson would spell differently from json (or that json refuses)."""
    t = type(o)
    if t is str or t is int or o is None or t is bool:
        return True
    if t is float:
        return o == 0.0 or 1e-4 <= abs(o) < 1e300  # NaN and infinities fail both tests
    if t is dict:
        o = o.values()
    elif t is not list and t is not tuple:
        return False  # a subclass, or a type orjson writes and json refuses (dates, UUIDs, …)
    for v in o:
        t = type(v)
        if t is not str and t is not int and not _same_spelling(v):
            return False
    return True


def dumps_body(body: Any) -> bytes:
    """The bytes httpx's ``json=body`` would send (raises what it would raise)."""
    if _same_spelling(body):
        try:
            return orjson.dumps(body)
        except orjson.JSONEncodeError:
            pass
    return _json_dumps(body).encode("utf-8")


def loads(data: bytes | str) -> Any:
    """``json.loads(data)``: same value, same exceptions."""
    if isinstance(data, str):
        pattern, brackets = _LONG_DIGITS_STR, data.count("[") + data.count("{")
    else:
        pattern, brackets = _LONG_DIGITS, data.count(b"[") + data.count(b"{")
    if brackets <= MAX_ORJSON_NESTING and pattern.search(data) is None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data)
