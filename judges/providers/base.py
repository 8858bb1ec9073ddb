"""The provider interface the judges code against: request, response, error, protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

#: Error kinds a caller may see on ``ProviderError.kind``.
#: "config" (401/403/404: pause the judge, do not retry), "invalid_request" (other 4xx: our request
#: is wrong, do not retry), "rate_limited", "server", "timeout", "network" (retried until attempts or
#: deadline run out), "invalid_response" (2xx with an unusable body), "circuit_open", "deadline".
ERROR_KINDS = frozenset({
    "config", "invalid_request", "rate_limited", "server", "timeout", "network",
    "invalid_response", "circuit_open", "deadline",
})


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    system: str
    messages: tuple[tuple[str, str], ...]   # (role "user"|"assistant", content)
    temperature: float = 0.0
    seed: int | None = None
    max_tokens: int = 1024
    json_schema: dict[str, Any] | None = None   # ask for structured JSON output when supported
    schema_name: str = "verdict"


@dataclass(frozen=True, slots=True)
class ChatResponse:
    text: str
    model: str            # as reported by the provider
    input_tokens: int
    output_tokens: int
    latency_s: float
    attempts: int
    stop_reason: str | None = None  # finish_reason / stop_reason as the provider gave it
    refusal: str | None = None  # the model declined to answer (no text): billed all the same


class ProviderError(Exception):
    """A failed ``complete`` call; ``kind`` is one of ``ERROR_KINDS``."""

    def __init__(self, kind: str, message: str, status: int | None = None, attempts: int = 0):
        super().__init__(f"{kind}: {message}" + (f" (HTTP {status})" if status is not None else ""))
        self.kind = kind
        self.message = message
        self.status = status
        self.attempts = attempts


class Provider(Protocol):
    name: str
    price_in_per_1m: float
    price_out_per_1m: float

    async def complete(self, req: ChatRequest) -> ChatResponse: ...

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float: ...
