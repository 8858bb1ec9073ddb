"""Judge drift: re-run each judge's frozen reference set and alert when agreement fell.

A pinned model can still change behind its name. ``drift.reference_sets`` maps a judge to a
human-labelled set (the calibration format); the owner of to_judge partition 0 re-runs it every
``drift.interval_s`` (:meth:`stream.judging.JudgeService.tick`) and compares each tier's agreement
with the baseline (the first run of that set for the judge version and tier).
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import TYPE_CHECKING

from judges.calibration import Agreement, golden_hash, load_golden
from judges.drift import check_drift as compare
from stream.calibrate_cli import acalibrate

if TYPE_CHECKING:
    from stream.judging import JudgeService

log = logging.getLogger(__name__)


async def check_drift(service: JudgeService) -> list[str]:
    """Re-run each judge's frozen reference set; alert when agreement with the human labels fell
    more than ``drift.max_drop`` below the baseline (a pinned model that silently changed).
    Returns the alert messages raised. Calls are on the ledger (purpose ``drift``)."""
    raised: list[str] = []
    for name, path in service.cfg.drift.reference_sets.items():
        tiers = service.runner.judges.get(name)
        if not tiers:
            continue
        rubric = next(iter(tiers.values())).rubric
        try:
            cases = load_golden(path)
        except (OSError, ValueError) as exc:
            log.error("drift: reference set of %s unusable: %s", name, exc)
            continue
        gh = golden_hash(cases)
        baselines = {t: await service.sink.latest_baseline(name, rubric.rubric_hash, t, gh) for t in tiers}
        try:
            results = await acalibrate(service.cfg, name, cases, service.sink.store, providers=service.providers,
                                       clock=service.clock, kind="drift")  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - a failed drift run must not stop judging
            log.error("drift run of %s failed: %s", name, exc)
            continue
        alerts = []
        for r in results:
            base = baselines.get(r.tier)
            if base is None:
                continue  # this run is the baseline
            reference = Agreement(n=base["n_scored"], n_scored=base["n_scored"], accuracy=base["accuracy"],
                                  tpr=None, tnr=None, kappa=base["kappa"], confusion={})  # fmt: skip
            result = compare(reference, r.agreement, service.cfg.drift.max_drop)
            if result.drifted:
                msg = f"judge {name} ({rubric.rubric_hash[:12]}) tier {r.tier} drifted: {result.message}"
                log.error("JUDGE DRIFT: %s", msg)
                raised.append(msg)
                alerts.append((uuid.uuid4().hex, "drift", name, rubric.rubric_hash, "firing", msg,
                               json.dumps({"tier": r.tier, "drop": result.drop, "model": r.model}),
                               int(service.clock() * 1000)))  # fmt: skip
        if alerts:
            tok = f"drift:{uuid.uuid4().hex}"  # once, outside the retried call: a retry must reuse it
            await service._retry(lambda: service.sink.write_alerts(alerts, tok), "write alerts")
            service.counters["alerts"] += len(alerts)
    return raised
