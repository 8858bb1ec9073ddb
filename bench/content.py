"""What the synthetic agents say: the apps, their prompts and tools, the words and the failures.

Plain Python values only; :mod:`bench.generate` turns them into OTLP spans. Every random choice
goes through the caller's ``random.Random`` so generation stays deterministic for a seed.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

MAX_HISTORY_BYTES = (
    2_500  # instrumentations capture the conversation; keep its tail under ~2.5 KB
)


@dataclass(frozen=True)
class App:
    service: str
    agent: str
    version: str
    provider: str
    model: str
    response_model: str
    system_prompt: str
    tools: tuple[str, ...]
    finish: dict[str, str]


_OPENAI = {"stop": "stop", "tool_call": "tool_calls"}
_ANTHROPIC = {"stop": "end_turn", "tool_call": "tool_use"}

APPS = (
    App("support-bot", "SupportAgent", "2.3.1", "openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18",
        "You are a helpful customer support agent for Acme Home. Be concise and polite. Never promise "
        "refunds above the policy limit; escalate to a human when the customer asks twice.",
        ("lookup_order", "get_shipping_status", "issue_refund", "search_kb", "create_ticket"), _OPENAI),
    App("travel-planner", "TravelAgent", "0.9.0", "anthropic", "claude-sonnet-4-5",
        "claude-sonnet-4-5-20250929",
        "You help users find and book flights. Always confirm dates and airports before booking and "
        "state the total price including taxes.",
        ("search_flights", "get_fare_rules", "book_flight", "get_weather", "convert_currency"), _ANTHROPIC),
    App("code-helper", "CodeAssistant", "1.4.0", "openai", "gpt-4.1", "gpt-4.1-2025-04-14",
        "You are a coding assistant with access to the user's repository. Read files before editing "
        "them and run the tests after every change.",
        ("read_file", "grep", "apply_patch", "run_tests", "list_dir"), _OPENAI),
)  # fmt: skip

WORDS = [
    "order",
    "shipment",
    "refund",
    "package",
    "delivery",
    "tracking",
    "account",
    "invoice",
    "warehouse",
    "customer",
    "address",
    "flight",
    "fare",
    "airport",
    "departure",
    "arrival",
    "layover",
    "booking",
    "seat",
    "baggage",
    "itinerary",
    "function",
    "module",
    "test",
    "failure",
    "exception",
    "repository",
    "branch",
    "commit",
    "patch",
    "config",
    "timeout",
    "retry",
    "latency",
    "cache",
    "please",
    "could",
    "you",
    "check",
    "whether",
    "the",
    "status",
    "of",
    "my",
    "recent",
    "request",
    "was",
    "updated",
    "yesterday",
    "and",
    "what",
    "options",
    "remain",
    "if",
    "it",
    "is",
    "still",
    "pending",
    "after",
    "the",
    "deadline",
    "mentioned",
    "in",
    "the",
    "email",
]

ERRORS = (
    ("TimeoutError", "upstream did not answer within 30s"),
    ("PermissionError", "tool is not allowed for this user"),
    ("ValueError", "invalid argument: order id must be numeric"),
    ("ConnectionError", "connection reset by peer"),
)

STACK = (
    'Traceback (most recent call last):\n  File "/app/agent/tools.py", line {line}, in run\n'
    "    result = await self._call(name, **arguments)\n"
    '  File "/app/agent/client.py", line 88, in _call\n'
    "    resp = await self.session.post(url, json=payload, timeout=self.timeout)\n"
    '  File "/usr/lib/python3.11/site-packages/httpx/_client.py", line 1585, in send\n'
    "    response = await self._send_handling_auth(request, auth=auth)\n{etype}: {emsg}\n"
)


def text(rng: random.Random, lo: int, hi: int) -> str:
    n = rng.randint(lo, hi)
    return " ".join(rng.choices(WORDS, k=n)).capitalize() + "."


def as_json(o: Any) -> str:
    return json.dumps(o, ensure_ascii=False)


def history_tail(messages: list[str]) -> str:
    """JSON array of the last messages (already JSON) that fit MAX_HISTORY_BYTES (at least one)."""
    out: list[str] = []
    size = 0
    for m in reversed(messages):
        if out and size + len(m) > MAX_HISTORY_BYTES:
            break
        out.append(m)
        size += len(m) + 1
    return "[" + ",".join(reversed(out)) + "]"
