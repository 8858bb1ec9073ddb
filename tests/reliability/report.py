"""Run the fault suite and print its figures table (the README's Reliability table).

    python -m tests.reliability.report           # short versions (those in the default test run)
    python -m tests.reliability.report --long    # long versions (pytest -m reliability)
    python -m tests.reliability.report -k kill   # a subset, by pytest keyword

Every scenario runs against the real broker (tansu) and real ClickHouse (chDB) and asserts its
guarantee; this script only collects the figures the scenarios record and prints them as one table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| scenario | size | guarantee | figures |", "|---|---|---|---|"]
    for r in rows:
        figs = ", ".join(f"{k} {v}" for k, v in r["figures"].items())
        lines.append(f"| {r['scenario']} | {r['size']} | {r['guarantee']} | {figs} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--long", action="store_true", help="run the long versions (the `reliability` marker)")
    ap.add_argument("-k", dest="keyword", help="pytest -k expression: run only matching scenarios")
    ap.add_argument("--out", type=Path, help="also write the table (markdown) to this file")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        figures = Path(tmp) / "figures.jsonl"
        cmd = [sys.executable, "-m", "pytest", str(HERE), "-p", "no:cacheprovider", "-q",
               "-m", "reliability" if args.long else "not reliability"]  # fmt: skip
        if args.long:
            cmd += ["-o", "timeout=3600"]
        if args.keyword:
            cmd += ["-k", args.keyword]
        started = time.monotonic()
        rc = subprocess.call(cmd, env={**os.environ, "TRACEJUDGE_FIGURES_FILE": str(figures)})
        elapsed = time.monotonic() - started
        rows = [json.loads(line) for line in figures.read_text().splitlines()] if figures.exists() else []
    table = format_table(rows)
    verdict = "all guarantees held" if rc == 0 else f"FAILED (pytest exit code {rc})"
    print(f"\n{table}\n\n{len(rows)} scenario runs in {elapsed:.0f} s: {verdict}")
    if args.out:
        args.out.write_text(table + "\n")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
