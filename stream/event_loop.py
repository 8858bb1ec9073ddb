"""The worker's event loop: uvloop by default (``Settings.event_loop``), the standard library's on request."""

from __future__ import annotations

import asyncio
from typing import Literal, get_args

EventLoop = Literal["uvloop", "asyncio"]  # the type of ``Settings.event_loop``
CHOICES: tuple[str, ...] = get_args(EventLoop)


def use_event_loop(name: str) -> None:
    """Make ``name`` the event loop of every loop this process creates from now on (Faust's, and
    the ``asyncio.run`` calls of start-up). uvloop (libuv) spends less CPU per socket read, timer
    and callback than asyncio's pure-Python selector loop; the code is the same on both."""
    if name not in CHOICES:
        raise ValueError(f"event loop {name!r}: expected one of {', '.join(CHOICES)}")
    if name == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    else:
        asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
