"""Anthropic Messages API: ``POST {base_url}/v1/messages`` with ``x-api-key`` and
``anthropic-version: 2023-06-01``; ``base_url`` is the host (``https://api.anthropic.com``).

Structured output uses the GA ``output_config.format`` JSON-schema field when the spec enables
it. HTTP 529 (overloaded) is retried like 503 (see ``retry.classify_status``)."""

from __future__ import annotations

from typing import Any

from judges.providers.base import ChatRequest
from judges.providers.http import HttpProvider, Parsed, billed, require
from judges.providers.wire_schema import strict_subset

ANTHROPIC_VERSION = "2023-06-01"


class AnthropicProvider(HttpProvider):
    def _request(self, req: ChatRequest) -> tuple[str, dict[str, str], dict[str, Any]]:
        body: dict[str, Any] = {
            "model": req.model,
            "max_tokens": req.max_tokens,
            "messages": [{"role": role, "content": content} for role, content in req.messages],
            "temperature": req.temperature,
        }
        if req.system:
            body["system"] = req.system
        if req.json_schema is not None and self.structured_output:
            body["output_config"] = {"format": {"type": "json_schema", "schema": strict_subset(req.json_schema)}}
        return f"{self.base_url}/v1/messages", self._headers, body

    def _fixed_headers(self) -> dict[str, str]:
        return {"x-api-key": self._api_key, "anthropic-version": ANTHROPIC_VERSION, "Accept": "application/json"}

    def _parse(self, body: Any) -> Parsed:
        model, input_tokens, output_tokens = billed(body, "input_tokens", "output_tokens")
        content = body.get("content")
        require(isinstance(content, list), "content missing")
        texts: list[str] = []
        for block in content:
            require(isinstance(block, dict), "content block is not an object")
            if block.get("type") == "text":
                require(isinstance(block.get("text"), str), "text block without text")
                texts.append(block["text"])
        stop = body.get("stop_reason")
        stop_reason = stop if isinstance(stop, str) else None
        refusal = "stop_reason refusal" if stop_reason == "refusal" else None  # no text, or a partial one
        return Parsed("".join(texts), model, input_tokens, output_tokens, stop_reason, refusal)
