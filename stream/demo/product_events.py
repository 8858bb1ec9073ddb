"""Product events the demo's users "click": regenerate, thumbs up/down, abandon, escalate.

Users react to what they saw: frustrated or failed conversations draw thumbs-down, regenerate,
escalate or abandon; healthy ones sometimes get a thumbs-up or a copy. Some events name the trace,
others only the conversation (as a front end that never saw the trace id would send them). A few
malformed events show the events dead-letter topic at work.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from stream.demo.fleet import EmittedTrace
from stream.demo.scenarios import FAILURE_SCENARIOS

NEGATIVE_REACTIONS = ("thumbs_down", "regenerate", "escalate", "abandon", "edit")
POSITIVE_REACTIONS = ("thumbs_up", "copy")


def reactions(traces: Sequence[EmittedTrace], seed: int = 0, malformed: int = 2) -> list[bytes]:
    rng = random.Random(seed)
    now = time.time()
    out: list[bytes] = []
    for t in traces:
        failed = t.scenario in FAILURE_SCENARIOS
        if rng.random() >= (0.5 if failed else 0.1):
            continue
        kind = rng.choice(NEGATIVE_REACTIONS if failed else POSITIVE_REACTIONS)
        event: dict[str, object] = {"type": kind, "ts": now, "attributes": {"ui": "chat-widget"}}
        if rng.random() < 0.7:
            event["trace_id"] = t.trace_id
        else:
            event["conversation_id"] = t.conversation_id
        out.append(json.dumps(event).encode())
    out += [b'{"type": "teleport", "trace_id": "00000000000000000000000000000001", "ts": 1}'] * min(malformed, 1)
    out += [b"not json at all"] * max(malformed - 1, 0)
    return out


def send(bootstrap: str, topic: str, values: Sequence[bytes]) -> None:
    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            for v in values:
                await producer.send_and_wait(topic, v)
        finally:
            await producer.stop()

    asyncio.run(run())
