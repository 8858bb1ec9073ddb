"""The cheap tier on every completed trace: gates, signals, then the sampling decision.

Fixed order and precedence, one place: gates (never raise: a raising gate is an ``error``
result), semantic signal miners (a raising miner is counted and skipped), action signals joined
from product events, then :class:`stream.sampling.sampler.Sampler` decides the class, the rule
that decided, and the inclusion probability — stamped with the policy version.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from schemas.model import Trace
from stream.gates.base import GateOutcome, GateResult, run_gates
from stream.gates.registry import build_gates
from stream.policy import Policy
from stream.sampling.rules import facts_from
from stream.sampling.sampler import Decision, Sampler
from stream.signals.base import Signal
from stream.signals.semantic import build_miner

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TraceDecision:
    gate_results: list[GateResult]
    signals: list[Signal]
    decision: Decision
    miner_errors: list[str] = field(default_factory=list)

    @property
    def failed_gates(self) -> list[str]:
        return [r.gate for r in self.gate_results if r.outcome == GateOutcome.FAIL]

    @property
    def gate_errors(self) -> list[str]:
        return [r.gate for r in self.gate_results if r.outcome == GateOutcome.ERROR]


class TraceDecider:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.version = policy.version
        self.gates = build_gates(policy.gates)
        self.miners = [build_miner(spec) for spec in policy.signals]
        self.sampler = Sampler(policy.sampling, self.version)

    def decide(self, trace: Trace, action_signals: Sequence[Signal] = ()) -> TraceDecision:
        results = run_gates(self.gates, trace)
        signals: list[Signal] = []
        miner_errors: list[str] = []
        for miner in self.miners:
            try:
                signals.extend(miner.mine(trace))
            except Exception as exc:  # an odd trace must not stop the stream; it is counted
                log.warning("signal miner %s failed on trace %s: %r", miner.name, trace.trace_id, exc)
                miner_errors.append(miner.name)
        signals.extend(action_signals)
        failed = [r.gate for r in results if r.outcome == GateOutcome.FAIL]
        negative = sorted({s.type for s in signals if s.polarity == "negative"})
        positive = sorted({s.type for s in signals if s.polarity == "positive"})
        decision = self.sampler.decide(facts_from(trace, failed, negative, positive))
        return TraceDecision(results, signals, decision, miner_errors)
