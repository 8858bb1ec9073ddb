"""stream/app.py: the Faust consumer a worker builds."""

from __future__ import annotations

import asyncio

import faust

from stream.app import set_fetch_max_wait


def test_the_worker_consumer_waits_at_most_the_configured_fetch_wait() -> None:
    async def build(wait: float | None) -> int:
        app = faust.App(f"t-{wait}", broker="kafka://127.0.0.1:9")
        if wait is not None:
            set_fetch_max_wait(app, wait)
        consumer = app.consumer._thread._create_consumer(loop=asyncio.get_running_loop())
        return consumer._fetch_max_wait_ms

    async def main() -> tuple[int, int, int]:
        return await build(0.1), await build(None), await build(0.25)

    patched, untouched, other = asyncio.run(main())
    assert (patched, other) == (100, 250)
    assert untouched == 1500  # Faust's own value where the setting is not applied
