"""Sampling: which completed traces go to the judges, deterministically and with a recorded p.

* :mod:`.hashing` — ``unit_hash`` / ``keep``: salted blake2b of the trace id against a rate;
* :mod:`.rules` — ``TraceFacts`` (what sampling sees) and ``Match`` conditions;
* :mod:`.sampler` — the policy spec (drop rules, suspected-failure class, success class and
  strata) and ``Sampler.decide`` -> ``Decision`` (class, rule, p, sampled, stratum, version).

The pass rate over all (non-dropped) traffic is estimated from the judged sample by
:mod:`stream.estimate`.
"""

from stream.sampling.hashing import keep, unit_hash
from stream.sampling.rules import Match, TraceFacts, facts_from
from stream.sampling.sampler import (
    Decision,
    DropRule,
    Sampler,
    SamplingSpec,
    Stratum,
    SuccessClass,
    SuspectedFailureClass,
)

__all__ = [
    "Decision", "DropRule", "Match", "Sampler", "SamplingSpec", "Stratum", "SuccessClass",
    "SuspectedFailureClass", "TraceFacts", "facts_from", "keep", "unit_hash",
]  # fmt: skip
