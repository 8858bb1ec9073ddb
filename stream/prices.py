"""LLM price table: model name (or glob) → USD per 1M input / output tokens.

Prices are configuration, not data: they change, differ per contract, and must never be baked into
stored rows. The built-in table (``stream/prices.yaml``) is dated (``as_of``); a user file in the
same format overrides it entry by entry (its entries are consulted first) or replaces it
(``replace_defaults: true``)::

    as_of: "2026-01-15"            # required: when these prices were checked
    currency: USD                  # only USD
    source: "our negotiated rates" # optional
    replace_defaults: false        # user files only
    prices:
      "gpt-4o-mini*": {input_per_1m: 0.12, output_per_1m: 0.48}
      "my-finetune":  {input_per_1m: 3.00, output_per_1m: 12.00}

Matching (:meth:`PriceTable.lookup`), case-insensitive, per table (user table first):

1. the model name as given, then the part after its last ``/`` (``models/gemini-2.0-flash``,
   ``openai/gpt-4o``), each tried as:
2. an exact key, else the matching glob (``fnmatch``: ``*``, ``?``, ``[...]``) with the most
   literal characters, ties broken by file order.

A model that matches nothing is *unpriced*: callers report it as such, never as zero cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

_GLOB_CHARS = frozenset("*?[")
DEFAULT_PRICES = "prices.yaml"


class PriceError(ValueError):
    """An invalid price file (the message names the file and the entry)."""


class ModelPrice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_1m: float = Field(ge=0, allow_inf_nan=False, description="USD per 1M input tokens")
    output_per_1m: float = Field(ge=0, allow_inf_nan=False, description="USD per 1M output tokens")

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """USD for this many tokens."""
        return (input_tokens * self.input_per_1m + output_tokens * self.output_per_1m) / 1_000_000


class PriceFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    as_of: str = Field(min_length=1, description="date the prices were checked, e.g. 2025-10-31")
    currency: str = "USD"
    source: str = ""
    replace_defaults: bool = False
    prices: dict[str, ModelPrice] = Field(min_length=1)

    @field_validator("as_of", mode="before")
    @classmethod
    def _date_text(cls, v: Any) -> Any:
        return str(v) if v is not None and not isinstance(v, str) else v  # YAML reads 2025-10-31 as a date

    @field_validator("currency")
    @classmethod
    def _usd(cls, v: str) -> str:
        if v != "USD":
            raise ValueError("only USD prices are supported")
        return v

    @field_validator("prices")
    @classmethod
    def _keys(cls, v: dict[str, ModelPrice]) -> dict[str, ModelPrice]:
        seen: set[str] = set()
        for key in v:
            norm = key.strip().lower()
            if not norm:
                raise ValueError("empty model key")
            if norm in seen:
                raise ValueError(f"duplicate model key {key!r} (keys are case-insensitive)")
            seen.add(norm)
        return v


@dataclass(frozen=True)
class PriceMatch:
    """The price found for a model and where it came from."""

    pattern: str
    price: ModelPrice
    table: str  # "default" or the user file's path


@dataclass(frozen=True)
class _Table:
    name: str
    as_of: str
    exact: dict[str, ModelPrice]
    globs: list[tuple[int, int, str, ModelPrice]]  # (-literal chars, file order, pattern, price)

    @classmethod
    def build(cls, name: str, doc: PriceFile) -> _Table:
        exact: dict[str, ModelPrice] = {}
        globs = []
        for order, (key, price) in enumerate(doc.prices.items()):
            k = key.strip().lower()
            if _GLOB_CHARS & set(k):
                literal = sum(1 for c in k if c not in _GLOB_CHARS)
                globs.append((-literal, order, k, price))
            else:
                exact[k] = price
        return cls(name, doc.as_of, exact, sorted(globs, key=lambda g: (g[0], g[1])))

    def find(self, name: str) -> tuple[str, ModelPrice] | None:
        if name in self.exact:
            return name, self.exact[name]
        for _, _, pattern, price in self.globs:
            if fnmatchcase(name, pattern):
                return pattern, price
        return None


class PriceTable:
    """Ordered price tables (user file first, then the defaults); see the module docstring."""

    def __init__(self, tables: list[_Table]) -> None:
        self._tables = tables
        self._cache: dict[str, PriceMatch | None] = {}

    @property
    def as_of(self) -> str:
        """``as_of`` of every table in lookup order, e.g. ``2026-01-15 (my.yaml); 2025-10-31 (default)``."""
        return "; ".join(f"{t.as_of} ({t.name})" for t in self._tables)

    def lookup(self, model: str) -> PriceMatch | None:
        """The price of ``model``, or None when no table prices it (unknown, or an empty name)."""
        if model in self._cache:
            return self._cache[model]
        found = None
        name = model.strip().lower()
        candidates = [name] + ([name.rsplit("/", 1)[1]] if "/" in name else [])
        for table in self._tables:
            for candidate in candidates:
                if candidate and (hit := table.find(candidate)) is not None:
                    found = PriceMatch(hit[0], hit[1], table.name)
                    break
            if found is not None:
                break
        if len(self._cache) < 10_000:
            self._cache[model] = found
        return found

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        """USD for the tokens, or None when the model is unpriced."""
        match = self.lookup(model)
        return None if match is None else match.price.cost(input_tokens, output_tokens)


def parse_price_file(data: Any, source: str) -> PriceFile:
    if not isinstance(data, dict):
        raise PriceError(f"{source}: expected a mapping with as_of and prices")
    try:
        doc = PriceFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or '(file)'}: {e['msg']}" for e in exc.errors())
        raise PriceError(f"{source}: {problems}") from None
    return doc


def _read(text: str, source: str) -> PriceFile:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PriceError(f"{source}: (yaml): {exc}") from None
    return parse_price_file(data, source)


def default_price_file() -> PriceFile:
    """The built-in table shipped with the package."""
    text = resources.files("stream").joinpath(DEFAULT_PRICES).read_text(encoding="utf-8")
    return _read(text, f"stream/{DEFAULT_PRICES}")


def load_prices(path: str | Path | None = None) -> PriceTable:
    """The built-in table, overridden (or replaced) by the user's file at ``path``."""
    tables = []
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PriceError(f"{path}: cannot read: {exc}") from None
        user = _read(text, str(path))
        tables.append(_Table.build(str(path), user))
        if user.replace_defaults:
            return PriceTable(tables)
    tables.append(_Table.build("default", default_price_file()))
    return PriceTable(tables)
