"""Retry a storage or produce operation until it succeeds: storage outages are waited out, never
turned into lost data (the batch is not acknowledged until the operation succeeded)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)


async def retry_forever(
    op: Callable[[], Awaitable[Any]],
    what: str,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    initial: float = 0.5,
    maximum: float = 30.0,
    on_retry: Callable[[], None] | None = None,
    stop_on: tuple[type[BaseException], ...] = (),
) -> Any:
    """Run ``op`` until it returns, backing off exponentially (``initial`` → ``maximum``) with jitter.
    An exception of a ``stop_on`` type is raised at once (the caller handles it; not retried)."""
    delay = initial
    attempt = 0
    while True:
        try:
            return await op()
        except asyncio.CancelledError:
            raise
        except stop_on:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is retried; the caller holds the batch
            attempt += 1
            if on_retry is not None:
                on_retry()
            log.warning("%s failed (attempt %d), retrying in %.1fs: %s", what, attempt, delay, exc)
            await sleep(delay * (0.5 + random.random() / 2))
            delay = min(delay * 2, maximum)
