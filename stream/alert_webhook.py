"""Posting alerts to a Slack-compatible webhook (bounded retries with backoff; ``Retry-After``
honoured). Used by :mod:`stream.alerts`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx


class WebhookError(RuntimeError):
    pass


class WebhookSender:
    """POST a JSON payload; retries timeouts, network errors, 429 and 5xx at most ``max_attempts``
    times in all, with exponential backoff (or ``Retry-After``, capped at 30 s)."""

    def __init__(self, url: str, client: httpx.AsyncClient | None = None, *, timeout_s: float = 5.0,
                 max_attempts: int = 3, backoff_s: float = 0.5,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:  # fmt: skip
        self.url = url
        self._client = client
        self._owned = client is None
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.sleep = sleep

    async def __call__(self, payload: dict[str, Any]) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient()
        problem = ""
        for attempt in range(1, self.max_attempts + 1):
            delay = self.backoff_s * 2 ** (attempt - 1)
            try:
                resp = await self._client.post(self.url, json=payload, timeout=self.timeout_s)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code < 300:
                    return
                problem = f"HTTP {resp.status_code}: {resp.text[:200]}"
                if resp.status_code != 429 and resp.status_code < 500:
                    raise WebhookError(f"webhook refused the post ({problem})")
                try:
                    delay = max(delay, min(30.0, float(resp.headers.get("retry-after", ""))))
                except ValueError:
                    pass
            if attempt < self.max_attempts:
                await self.sleep(delay)
        raise WebhookError(f"webhook failed after {self.max_attempts} attempts ({problem})")

    async def aclose(self) -> None:
        if self._owned and self._client is not None:
            await self._client.aclose()
            self._client = None
