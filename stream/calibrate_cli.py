"""``tracejudge calibrate``: measure a judge version against human labels, per model tier.

Runs a golden set (:mod:`judges.calibration`) through every configured tier of one rubric, then
stores one ``judge_calibrations`` row per tier (kind ``calibration``; metrics, golden hash, the
confusion matrix in ``details`` and the disagreement between the first two tiers on every row of
the run) and one ``judge_calls`` ledger row per provider call (purpose ``calibration``, no Kafka
partition: it is paid for but not charged to a partition's budget share).

``judge_calibrations`` is keyed by (judge, rubric_hash, kind, run_id), without the tier, so each
tier's row carries ``run_id = "<run uuid>:<tier>"`` (:func:`row_run_id`); the ledger's ``worker_run``
is the run uuid itself.

The worker reads the newest calibration of each (judge, rubric hash, tier) at start
(:func:`latest_calibrations`): a judge version whose kappa is below its floor
(``calibration.min_kappa``) is ``monitoring_only`` (:func:`monitoring_only`), and tiers that
disagree more than ``calibration.max_tier_disagreement`` make the cascade escalate every trace.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from judges.calibration import Agreement, GoldenCase, GoldenError, golden_hash, load_golden, run_golden, tier_disagreement
from judges.config import JudgingConfig, JudgingConfigError, load_judging_config
from judges.pricing import tier_prices
from judges.prompt import extract_values, input_hash
from judges.providers.base import Provider, ProviderError
from judges.providers.config import build_provider
from judges.rubric import Rubric
from judges.rubric_judge import RubricJudge
from judges.verdict import Verdict
from schemas.model import Trace
from stream.config import Settings
from stream.judge_rows import CALL_COLUMNS, CallContext, call_row
from stream.store import ClickHouseStore, StoreLockedError

CALIBRATION_COLUMNS = (
    "run_id", "kind", "judge", "judge_version", "rubric_hash", "tier", "model", "golden_hash", "n",
    "n_scored", "accuracy", "tpr", "tnr", "kappa", "tier_disagreement", "details", "created_at",
)  # fmt: skip
_METRICS = ("accuracy", "tpr", "tnr", "kappa")


class CalibrationError(ValueError):
    """Calibration cannot run as asked (unknown judge or tier, bad labels, missing API key)."""


@dataclass(frozen=True)
class CalibrationResult:
    """One tier of one calibration run."""

    run_id: str
    judge: str
    judge_version: str
    rubric_hash: str
    tier: str
    model: str
    golden_hash: str
    agreement: Agreement
    tier_disagreement: float | None  # first two tiers of the run; None with one tier
    verdicts: list[Verdict]
    min_kappa: float | None
    calls: int
    cost_usd: float

    @property
    def row_run_id(self) -> str:
        return row_run_id(self.run_id, self.tier)

    @property
    def below_floor(self) -> bool:
        """Kappa below the judge's floor (an undefined kappa — nothing scored — is below any floor)."""
        if self.min_kappa is None:
            return False
        return self.agreement.kappa is None or self.agreement.kappa < self.min_kappa


@dataclass(frozen=True)
class CalibrationRow:
    """A stored ``judge_calibrations`` row; metrics that were undefined read back as None."""

    run_id: str
    judge: str
    judge_version: str
    rubric_hash: str
    tier: str
    model: str
    golden_hash: str
    n: int
    n_scored: int
    accuracy: float | None
    tpr: float | None
    tnr: float | None
    kappa: float | None
    tier_disagreement: float | None
    details: dict[str, Any]
    created_at: datetime


def row_run_id(run_id: str, tier: str) -> str:
    """The ``run_id`` column of one tier's row (the table's key has no tier column)."""
    return f"{run_id}:{tier}"


# ---- planning ----------------------------------------------------------------------------------


def plan(cfg: JudgingConfig, judge_name: str, cases: Sequence[GoldenCase],
         tiers: Sequence[str] | None = None) -> tuple[Rubric, list[str]]:  # fmt: skip
    """The rubric and the tiers to run (configured order, cheapest first); checks the labels."""
    rubrics = cfg.rubrics()
    if judge_name not in rubrics:
        raise CalibrationError(f"unknown judge {judge_name!r}; configured judges: {sorted(rubrics)}")
    rubric = rubrics[judge_name]
    order = cfg.tier_order(rubric)
    if tiers:
        unknown = [t for t in tiers if t not in order]
        if unknown:
            raise CalibrationError(f"tiers {unknown} are not configured for {judge_name} (its tiers: {order})")
        order = [t for t in order if t in tiers]
    bad = sorted({c.label for c in cases} - set(rubric.labels))
    if bad:
        ids = [c.case_id for c in cases if c.label in bad][:5]
        raise CalibrationError(f"golden labels {bad} are not labels of {judge_name} {rubric.labels} (cases {ids})")
    if not cases:
        raise CalibrationError("the golden set is empty")
    return rubric, order


def check_keys(cfg: JudgingConfig, tiers: Sequence[str], env: Mapping[str, str]) -> None:
    """Fail before any paid call when a tier's provider has no API key in the environment."""
    specs = {p.name: p for p in cfg.providers}
    for tier in tiers:
        spec = specs[cfg.tiers[tier].provider]
        if not env.get(spec.api_key_env):
            raise CalibrationError(f"tier {tier}: provider {spec.name!r} needs its API key in the "
                                   f"environment variable {spec.api_key_env}, which is not set")  # fmt: skip


# ---- the run -----------------------------------------------------------------------------------


async def acalibrate(
    cfg: JudgingConfig,
    judge_name: str,
    cases: Sequence[GoldenCase],
    store: ClickHouseStore,
    tiers: Sequence[str] | None = None,
    clock: Callable[[], float] = time.time,
    *,
    env: Mapping[str, str] | None = None,
    providers: Mapping[str, Provider] | None = None,
    concurrency: int | None = None,
    kind: str = "calibration",
) -> list[CalibrationResult]:
    """Run the golden set through each tier, store the calibration and ledger rows, return results.
    ``kind="drift"``: the worker's scheduled re-run of a frozen reference set (same rows, that kind)."""
    rubric, order = plan(cfg, judge_name, cases, tiers)
    prices = tier_prices(cfg)
    env = os.environ if env is None else env
    owned: dict[str, Any] = {}
    if providers is None:
        check_keys(cfg, order, env)
        for name in {cfg.tiers[t].provider for t in order}:
            spec = next(p for p in cfg.providers if p.name == name)
            try:
                owned[name] = build_provider(spec, env=env)
            except ProviderError as exc:
                raise CalibrationError(exc.message) from None
        providers = owned
    run_id = str(uuid.uuid4())
    ctx = CallContext(kind, -1, -1, run_id)
    ghash = golden_hash(cases)
    calls: list[tuple[Any, ...]] = []
    measured: list[tuple[str, Agreement, list[Verdict], int, float]] = []
    try:
        for tier in order:
            judge = RubricJudge(rubric, providers[cfg.tiers[tier].provider], cfg.tiers[tier].model, tier,
                                max_value_chars=cfg.max_value_chars, price=prices[tier].price)  # fmt: skip
            tier_calls = _ledgered(judge, tier, cfg, ctx, clock, calls)
            before = len(calls)
            agreement, verdicts = await run_golden(tier_calls, cases, concurrency or cfg.max_in_flight,
                                                   cfg.calibration.positive_label)  # fmt: skip
            paid = calls[before:]
            measured.append((tier, agreement, verdicts, len(paid), sum(v.cost_usd for v in verdicts)))
    finally:
        try:
            if calls:  # what was paid is recorded even if the run stops half-way
                await store.ainsert("judge_calls", calls, CALL_COLUMNS, f"calibration:{run_id}:calls")
        finally:
            for p in owned.values():
                await p.aclose()
    disagreement = tier_disagreement(measured[0][2], measured[1][2]) if len(measured) > 1 else None
    floor = cfg.min_kappa(judge_name)
    results = [
        CalibrationResult(run_id, rubric.name, rubric.version, rubric.rubric_hash, tier, cfg.tiers[tier].model,
                          ghash, agreement, disagreement, verdicts, floor, n_calls, cost)  # fmt: skip
        for tier, agreement, verdicts, n_calls, cost in measured
    ]
    created_ms = int(clock() * 1000)
    rows = [_calibration_row(r, order, created_ms, kind) for r in results]
    await store.ainsert("judge_calibrations", rows, CALIBRATION_COLUMNS, f"{kind}:{run_id}")
    return results


def calibrate(
    cfg: JudgingConfig,
    judge_name: str,
    cases: Sequence[GoldenCase],
    store: ClickHouseStore,
    tiers: Sequence[str] | None = None,
    clock: Callable[[], float] = time.time,
    **kw: Any,
) -> list[CalibrationResult]:
    """Synchronous :func:`acalibrate` (runs its own event loop)."""
    return asyncio.run(acalibrate(cfg, judge_name, cases, store, tiers, clock, **kw))


def _ledgered(judge: RubricJudge, tier: str, cfg: JudgingConfig, ctx: CallContext,
              clock: Callable[[], float], calls: list[tuple[Any, ...]]) -> Any:  # fmt: skip
    """``judge`` as ``async (trace, meta) -> Verdict`` that appends a ledger row per provider call
    (a verdict with ``attempts == 0`` never reached the provider and costs nothing: no row)."""

    async def call(trace: Trace, meta: Mapping[str, Any]) -> Verdict:
        values = extract_values(judge.rubric, trace, meta, cfg.max_value_chars)
        v = await judge(trace, meta, values)
        if v.attempts > 0:
            now = clock()
            period = math.floor(now / cfg.budget.period_s)
            calls.append(call_row(uuid.uuid4().hex, int(now * 1000), period, tier, input_hash(values), ctx, v))
        return v

    return call


def _calibration_row(r: CalibrationResult, order: Sequence[str], created_ms: int,
                     kind: str = "calibration") -> tuple[Any, ...]:  # fmt: skip
    a = r.agreement
    undefined = [m for m in _METRICS if getattr(a, m) is None]
    details = {
        "confusion": a.confusion, "unscored": a.unscored, "positive": a.positive,
        "undefined": undefined,  # stored as 0.0 in their columns; read back as None
        "statuses": dict(Counter(v.status for v in r.verdicts)), "calls": r.calls,
        "cost_usd": r.cost_usd, "min_kappa": r.min_kappa, "below_floor": r.below_floor,
        "tiers": list(order), "run": r.run_id,
    }  # fmt: skip
    return (
        r.row_run_id, kind, r.judge, r.judge_version, r.rubric_hash, r.tier, r.model, r.golden_hash,
        a.n, a.n_scored, *(getattr(a, m) or 0.0 for m in _METRICS), r.tier_disagreement,
        json.dumps(details, ensure_ascii=False, sort_keys=True), created_ms,
    )  # fmt: skip


# ---- what the worker reads at start ------------------------------------------------------------


def latest_calibrations(store: ClickHouseStore) -> dict[tuple[str, str, str], CalibrationRow]:
    """The newest ``kind = 'calibration'`` row per (judge, rubric hash, tier). Synchronous: call it
    on the ClickHouse thread (``await store.run(latest_calibrations, store)``) or outside a loop."""
    _, rows = store.query(
        f"SELECT {', '.join(CALIBRATION_COLUMNS)} FROM {store.database}.judge_calibrations FINAL "
        "WHERE kind = 'calibration' ORDER BY created_at DESC, run_id DESC LIMIT 1 BY judge, rubric_hash, tier"
    )
    out: dict[tuple[str, str, str], CalibrationRow] = {}
    for values in rows:
        r = dict(zip(CALIBRATION_COLUMNS, values, strict=True))
        try:
            details = json.loads(r["details"]) if r["details"] else {}
        except ValueError:
            details = {}
        undefined = set(details.get("undefined") or ())
        metrics = {m: (None if m in undefined else float(r[m])) for m in _METRICS}
        td = r["tier_disagreement"]
        row = CalibrationRow(
            run_id=r["run_id"], judge=r["judge"], judge_version=r["judge_version"], rubric_hash=r["rubric_hash"],
            tier=r["tier"], model=r["model"], golden_hash=r["golden_hash"], n=int(r["n"]),
            n_scored=int(r["n_scored"]), tier_disagreement=None if td is None else float(td), details=details,
            created_at=r["created_at"], **metrics,
        )  # fmt: skip
        out[(row.judge, row.rubric_hash, row.tier)] = row
    return out


def monitoring_only(cfg: JudgingConfig, judge: str, rubric_hash: str,
                    calibrations: Mapping[tuple[str, str, str], CalibrationRow]) -> bool:  # fmt: skip
    """Whether this judge version must not alert: its floor (``calibration.min_kappa``) is set and
    the latest calibration of ANY configured tier has a kappa below it (or none at all, nothing
    scored). Which tier's verdict ends up final varies per trace, so one weak tier is enough.
    A version never calibrated, or a judge without a floor, is not monitoring_only."""
    floor = cfg.min_kappa(judge)
    if floor is None:
        return False
    return any(
        row.kappa is None or row.kappa < floor
        for (j, h, tier), row in calibrations.items()
        if j == judge and h == rubric_hash and tier in cfg.tiers
    )


# ---- the command -------------------------------------------------------------------------------


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def render(results: Sequence[CalibrationResult], console: Console, max_tier_disagreement: float | None = None) -> None:
    for r in results:
        a = r.agreement
        table = Table(title=Text(f"{r.judge} v{r.judge_version} ({r.rubric_hash[:12]}) — tier {r.tier}: {r.model}"))
        for col in ("n", "scored", "accuracy", "TPR", "TNR", "kappa", "tier disagreement", "calls", "cost USD"):
            table.add_column(col, justify="right")
        table.add_row(str(a.n), str(a.n_scored), _f(a.accuracy), _f(a.tpr), _f(a.tnr), _f(a.kappa),
                      _f(r.tier_disagreement), str(r.calls), f"{r.cost_usd:.4f}")  # fmt: skip
        console.print(table)
        labels = sorted(set(a.confusion) | {j for row in a.confusion.values() for j in row} | set(a.unscored))
        matrix = Table(title=Text(f"tier {r.tier}: human (rows) vs judge; positive = {a.positive}"))
        matrix.add_column("human \\ judge")
        for label in labels:
            matrix.add_column(Text(label), justify="right")
        matrix.add_column("unscored", justify="right")
        for h in labels:
            row = a.confusion.get(h, {})
            matrix.add_row(Text(h), *(str(row.get(j, 0)) for j in labels), str(a.unscored.get(h, 0)))
        console.print(matrix)
    if not results:
        return
    r0 = results[0]
    td = r0.tier_disagreement
    if td is not None and max_tier_disagreement is not None and td > max_tier_disagreement:
        console.print(f"[yellow]tiers {results[0].tier} and {results[1].tier} disagree on {td:.1%} of the cases both "
                      f"scored (> {max_tier_disagreement:.0%}): the worker escalates every trace[/yellow]")  # fmt: skip
    if r0.min_kappa is None:
        console.print(f"no calibration floor for {escape(r0.judge)} (calibration.min_kappa / default_min_kappa)")
        return
    below = [r.tier for r in results if r.below_floor]
    if below:
        console.print(f"[bold red]{escape(r0.judge)} ({r0.rubric_hash[:12]}) is below its floor: kappa < "
                      f"{r0.min_kappa} on tier(s) {escape(', '.join(below))} → monitoring_only[/bold red]")  # fmt: skip
    else:
        console.print(f"[green]{escape(r0.judge)} ({r0.rubric_hash[:12]}) meets its floor (kappa ≥ {r0.min_kappa}) "
                      "on every tier[/green]")  # fmt: skip


def run_cli(settings: Settings, judge: str, golden: Path, judging: Path | None, tiers: Sequence[str] | None,
            console: Console, err: Console, env: Mapping[str, str] | None = None) -> int:  # fmt: skip
    """What ``tracejudge calibrate`` does; the exit code (2: cannot run as asked)."""
    env = os.environ if env is None else env
    path = judging or settings.judging_file
    if path is None:
        err.print("[red]no judging config: pass --judging FILE or set judging_file (TRACEJUDGE_JUDGING_FILE)[/red]")
        return 2
    try:
        cfg = load_judging_config(path)
        cases = load_golden(golden)
        _, order = plan(cfg, judge, cases, tiers)
        check_keys(cfg, order, env)
    except (JudgingConfigError, GoldenError, CalibrationError) as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        return 2
    try:
        store = ClickHouseStore.from_settings(settings)
    except StoreLockedError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]\n[red]calibrate writes results: stop the worker holding the "
                  "embedded store (or use a ClickHouse server) and run it again.[/red]")  # fmt: skip
        return 2
    try:
        store.migrate()
        console.print(f"calibrating {escape(judge)} on {len(cases)} golden cases, tiers {', '.join(order)}")
        results = calibrate(cfg, judge, cases, store, order, env=env)
    except CalibrationError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        return 2
    finally:
        store.close()
    render(results, console, cfg.calibration.max_tier_disagreement)
    console.print(f"run {results[0].run_id}: {sum(r.calls for r in results)} calls, "
                  f"${sum(r.cost_usd for r in results):.4f}; golden {results[0].golden_hash[:12]}")  # fmt: skip
    return 0
