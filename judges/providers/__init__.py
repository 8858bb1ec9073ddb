"""LLM providers over httpx: OpenAI-compatible chat completions and the Anthropic Messages API.

Every provider has one pooled ``httpx.AsyncClient`` over aiohttp (``transport.py``), a retry
policy (bounded attempts, overall deadline, full-jitter backoff, ``Retry-After``) and a circuit
breaker; see ``build_provider``.
"""

from judges.providers.base import ChatRequest, ChatResponse, Provider, ProviderError
from judges.providers.config import ProviderSpec, build_provider

__all__ = ["ChatRequest", "ChatResponse", "Provider", "ProviderError", "ProviderSpec", "build_provider"]
