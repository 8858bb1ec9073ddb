"""``ProviderSpec`` (one configured provider) and ``build_provider``."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Mapping
from typing import Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from judges.providers.anthropic import AnthropicProvider
from judges.providers.base import ProviderError
from judges.providers.breaker import CircuitBreaker
from judges.providers.http import HttpProvider
from judges.providers.openai_compat import OpenAICompatProvider
from judges.providers.retry import Clock, RetryPolicy, Sleep


class ProviderSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["openai", "anthropic"]
    name: str = Field(min_length=1)
    base_url: str = Field(min_length=1)
    api_key_env: str = Field(min_length=1)
    timeout_s: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    deadline_s: float = Field(default=180.0, gt=0)
    backoff_base_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=30.0, ge=0)
    #: USD per 1M tokens, for a provider entry that serves one model; the tiers' prices win (judges/pricing.py)
    price_in_per_1m: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    price_out_per_1m: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    structured_output: bool = False
    #: OpenAI-compatible only: the output-length parameter; unset = max_completion_tokens on
    #: api.openai.com and for OpenAI's reasoning models, max_tokens elsewhere
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] | None = None
    breaker_failures: int = Field(default=5, ge=1)
    breaker_cooldown_s: float = Field(default=30.0, ge=0)
    max_connections: int = Field(default=32, ge=1, le=4096, description="pooled HTTP connections to this provider")

    @model_validator(mode="after")
    def _both_prices(self) -> Self:
        return both_prices_or_neither(self)


_P = TypeVar("_P", bound=BaseModel)


def both_prices_or_neither(spec: _P) -> _P:
    """A price is an input and an output rate: half of one is a config error, not $0."""
    given = [n for n in ("price_in_per_1m", "price_out_per_1m") if getattr(spec, n) is not None]
    if len(given) == 1:
        missing = "price_out_per_1m" if given[0] == "price_in_per_1m" else "price_in_per_1m"
        raise ValueError(f"{given[0]} is set but {missing} is not: set both (0 is a valid price)")
    return spec


def build_provider(spec: ProviderSpec, *, sleep: Sleep = asyncio.sleep,
                   clock: Clock = time.monotonic, env: Mapping[str, str] = os.environ,
                   rng: random.Random | None = None) -> HttpProvider:
    """The provider for ``spec``; raises ``ProviderError("config")`` naming a missing key variable."""
    api_key = env.get(spec.api_key_env, "")
    if not api_key:
        raise ProviderError("config", f"provider {spec.name!r}: environment variable "
                            f"{spec.api_key_env} is not set")
    policy = RetryPolicy(max_attempts=spec.max_attempts, deadline_s=spec.deadline_s,
                         base_delay_s=spec.backoff_base_s, max_delay_s=spec.backoff_max_s,
                         rng=rng or random.Random())
    breaker = CircuitBreaker(spec.breaker_failures, spec.breaker_cooldown_s, clock)
    cls = OpenAICompatProvider if spec.type == "openai" else AnthropicProvider
    provider = cls(name=spec.name, base_url=spec.base_url, api_key=api_key, timeout_s=spec.timeout_s,
                   price_in_per_1m=spec.price_in_per_1m or 0.0, price_out_per_1m=spec.price_out_per_1m or 0.0,
                   structured_output=spec.structured_output, policy=policy, breaker=breaker,
                   sleep=sleep, clock=clock, max_connections=spec.max_connections)  # fmt: skip
    if isinstance(provider, OpenAICompatProvider):
        provider.max_tokens_field = spec.max_tokens_field
    return provider
