"""``FastModel``: a pydantic base whose instances can also be built without validation, cheaply.

The decoder builds every span (and its events, usage, messages) through ``FastModel.fast`` or
``FastModel.wrap``; validation would cost more than the decoding itself. Everything else about
these models is plain pydantic (``model_validate``, ``model_dump``, ``extra="forbid"``).
"""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict

# FastModel.wrap as prebound C calls: object.__new__ (no model defines __new__), BaseModel's slot setters
# (~1/3 cheaper than object.__setattr__); per-class caches in module dicts (cls.__dict__ costs ~0.3 µs).
_new_instance = object.__new__
_set_dict, _set_fields_set, _set_extra, _set_private = (
    BaseModel.__dict__[n].__set__ for n in ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__")
)
_FAST_PLANS: dict[type, tuple[dict[str, Any], list[tuple[str, Any]]]] = {}
_EVERY_FIELD: dict[type, set[str]] = {}


class FastModel(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=False)

    @classmethod
    def fast(cls, **fields: Any) -> Self:
        """Build without validation, like ``model_construct`` but without its per-call cost:
        pydantic 2.14 inspects every ``default_factory``'s signature on every construct, which
        made decoding ~10x slower. Defaults are resolved once per class; factories still run per
        instance, so no mutable default is shared. ``model_fields_set`` is every field."""
        plan = _FAST_PLANS.get(cls)
        if plan is None:
            static: dict[str, Any] = {}
            factories: list[tuple[str, Any]] = []
            for name, f in cls.model_fields.items():
                if f.default_factory is None:
                    static[name] = f.default
                else:
                    factory = f.default_factory
                    if isinstance(factory, type) and issubclass(factory, FastModel):
                        factory = factory.fast
                    factories.append((name, factory))
            plan = _FAST_PLANS[cls] = (static, factories)
        static, factories = plan
        values = dict(static)
        for name, factory in factories:
            if name not in fields:
                values[name] = factory()
        values.update(fields)
        return cls.wrap(values)

    @classmethod
    def wrap(cls, values: dict[str, Any]) -> Self:
        """An instance over ``values`` itself (no copy, no validation, no defaults): for hot paths
        that build the complete field dict (``fast`` with keywords costs ~2 µs more per span).
        ``values`` must hold every field, in the order ``fast`` gives (fields with a static
        default first, in declaration order, then those with a factory): ``model_dump`` and
        ``repr`` follow the dict's order."""
        m = _new_instance(cls)
        _set_dict(m, values)
        # One shared set of every field name per class instead of a set per instance (~430 bytes
        # each, a quarter of an open trace's memory): "fields set" only matters to
        # ``exclude_unset``, which the project never uses, and assigning a field adds a name
        # already in the set, so it is never mutated.
        every = _EVERY_FIELD.get(cls)
        if every is None:
            every = _EVERY_FIELD[cls] = set(cls.model_fields)
        _set_fields_set(m, every)
        _set_extra(m, None)
        _set_private(m, None)
        return m
