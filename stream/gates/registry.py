"""Gate specs (a discriminated union on ``type``) and the one place that builds gates from them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from pydantic import Field

from stream.gates.base import Gate
from stream.gates.cel import CelGate, CelSpec
from stream.gates.cost import CostGate, CostSpec
from stream.gates.exception import ExceptionGate, ExceptionSpec
from stream.gates.final_answer import FinalAnswerGate, FinalAnswerSpec
from stream.gates.latency import LatencyGate, LatencySpec
from stream.gates.loop import LoopGate, LoopSpec
from stream.gates.pattern import PatternGate, PatternSpec
from stream.gates.refusal import RefusalGate, RefusalSpec
from stream.gates.required_action import RequiredActionGate, RequiredActionSpec
from stream.gates.span_error import SpanErrorGate, SpanErrorSpec
from stream.gates.tool_args_schema import ToolArgsSchemaGate, ToolArgsSchemaSpec
from stream.gates.tool_error import ToolErrorGate, ToolErrorSpec

GateSpec = Annotated[
    SpanErrorSpec
    | ExceptionSpec
    | ToolErrorSpec
    | LoopSpec
    | LatencySpec
    | CostSpec
    | FinalAnswerSpec
    | RefusalSpec
    | PatternSpec
    | RequiredActionSpec
    | ToolArgsSchemaSpec
    | CelSpec,
    Field(discriminator="type"),
]

# spec class → gate constructor: the only switch on gate type
BUILDERS: dict[type[Any], Callable[[Any], Gate]] = {
    SpanErrorSpec: SpanErrorGate,
    ExceptionSpec: ExceptionGate,
    ToolErrorSpec: ToolErrorGate,
    LoopSpec: LoopGate,
    LatencySpec: LatencyGate,
    CostSpec: CostGate,
    FinalAnswerSpec: FinalAnswerGate,
    RefusalSpec: RefusalGate,
    PatternSpec: PatternGate,
    RequiredActionSpec: RequiredActionGate,
    ToolArgsSchemaSpec: ToolArgsSchemaGate,
    CelSpec: CelGate,
}


def build_gate(spec: GateSpec) -> Gate:
    try:
        builder = BUILDERS[type(spec)]
    except KeyError:
        raise ValueError(f"gate {getattr(spec, 'name', '?')!r}: unknown gate spec {type(spec).__name__}") from None
    return builder(spec)


def build_gates(specs: Sequence[GateSpec]) -> list[Gate]:
    """Build every gate (compiling regexes, schemas, CEL); duplicate names raise ``ValueError``."""
    dupes = sorted(name for name, n in Counter(s.name for s in specs).items() if n > 1)
    if dupes:
        raise ValueError(f"duplicate gate names: {', '.join(dupes)}")
    return [build_gate(s) for s in specs]


def default_gate_specs() -> list[GateSpec]:
    """One gate of each type that needs no configuration, with its defaults."""
    return [SpanErrorSpec(), ExceptionSpec(), ToolErrorSpec(), LoopSpec(), LatencySpec(), CostSpec(),
            FinalAnswerSpec(), RefusalSpec(), PatternSpec()]  # fmt: skip
