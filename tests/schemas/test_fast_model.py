"""``FastModel.fast`` / ``wrap``: unvalidated construction that still behaves like pydantic's."""

from __future__ import annotations

from pydantic import Field

from schemas.fast_model import FastModel


class Inner(FastModel):
    n: int = 0


class Outer(FastModel):
    name: str
    tags: list[str] = Field(default_factory=list)
    inner: Inner = Field(default_factory=Inner)
    level: int = 3


def test_fast_fills_defaults_and_equals_the_validated_model() -> None:
    built = Outer.fast(name="a")
    assert built == Outer(name="a")
    assert built.model_dump() == {"name": "a", "tags": [], "inner": {"n": 0}, "level": 3}
    assert built.model_fields_set == set(Outer.model_fields)


def test_factories_run_per_instance_so_no_mutable_default_is_shared() -> None:
    a, b = Outer.fast(name="a"), Outer.fast(name="b")
    a.tags.append("x")
    a.inner.n = 5
    assert b.tags == [] and b.inner.n == 0
    assert a.tags is not b.tags and a.inner is not b.inner


def test_given_fields_win_and_are_not_validated() -> None:
    built = Outer.fast(name="a", level="not an int")  # the caller's job, as with model_construct
    assert built.level == "not an int"
    assert Outer.fast(name="a", tags=["t"]).tags == ["t"]


def test_wrap_uses_the_dict_itself() -> None:
    values = {"level": 1, "name": "w", "tags": ["t"], "inner": Inner.fast(n=2)}
    built = Outer.wrap(values)
    assert built.__dict__ is values
    assert built.name == "w" and built.inner.n == 2
    assert built.model_dump() == {"level": 1, "name": "w", "tags": ["t"], "inner": {"n": 2}}
    assert built.model_fields_set == set(Outer.model_fields)
