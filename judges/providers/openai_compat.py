"""OpenAI-compatible Chat Completions (OpenAI, Azure-style gateways, vLLM, Ollama, LiteLLM, …).

``POST {base_url}/chat/completions`` with ``Authorization: Bearer <key>``; ``base_url`` includes
the version prefix (``https://api.openai.com/v1``)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from judges.providers.base import ChatRequest
from judges.providers.http import HttpProvider, Parsed, billed, require
from judges.providers.wire_schema import strict_subset


#: OpenAI's reasoning models (o1, o3, o4-mini, gpt-5 and its dated snapshots; not gpt-5-chat): they
#: refuse ``max_tokens`` (it is ``max_completion_tokens``) and any temperature but 1
_REASONING = re.compile(r"^(?:[\w.-]+/)?(?:o\d|gpt-5)(?!.*-chat)")


def is_reasoning_model(model: str) -> bool:
    return _REASONING.match(model) is not None


class OpenAICompatProvider(HttpProvider):
    #: the output-length parameter: None = ``max_completion_tokens`` on OpenAI's own API (every chat
    #: model takes it; ``max_tokens`` is deprecated there) and for its reasoning models anywhere,
    #: ``max_tokens`` elsewhere (what OpenAI-compatible servers take)
    max_tokens_field: str | None = None

    def _max_tokens_field(self, model: str) -> str:
        if self.max_tokens_field is not None:
            return self.max_tokens_field
        official = urlsplit(self.base_url).hostname == "api.openai.com"
        return "max_completion_tokens" if official or is_reasoning_model(model) else "max_tokens"

    def _request(self, req: ChatRequest) -> tuple[str, dict[str, str], dict[str, Any]]:
        messages: list[dict[str, str]] = []
        if req.system:
            messages.append({"role": "system", "content": req.system})
        messages.extend({"role": role, "content": content} for role, content in req.messages)
        body: dict[str, Any] = {
            "model": req.model,
            "messages": messages,
            "temperature": req.temperature,
            self._max_tokens_field(req.model): req.max_tokens,
        }
        if req.seed is not None:
            body["seed"] = req.seed
        if req.json_schema is not None and self.structured_output:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": req.schema_name, "schema": strict_subset(req.json_schema), "strict": True},
            }
        return f"{self.base_url}/chat/completions", self._headers, body

    def _fixed_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}

    def _parse(self, body: Any) -> Parsed:
        model, input_tokens, output_tokens = billed(body, "prompt_tokens", "completion_tokens")
        choices = body.get("choices")
        require(isinstance(choices, list) and len(choices) > 0, "no choices")
        choice = choices[0]
        require(isinstance(choice, dict) and isinstance(choice.get("message"), dict),
                "choices[0].message missing")
        message = choice["message"]
        finish = choice.get("finish_reason")
        stop_reason = finish if isinstance(finish, str) else None
        content = message.get("content")
        refusal = message.get("refusal")
        if content is None:  # a refusal, or every token spent before any text (a reasoning model at its limit)
            return Parsed("", model, input_tokens, output_tokens, stop_reason,
                          str(refusal)[:500] if refusal else None)  # fmt: skip
        require(isinstance(content, str), "choices[0].message.content is not a string")
        return Parsed(content, model, input_tokens, output_tokens, stop_reason)
