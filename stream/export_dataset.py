"""The dataset directory of ``tracejudge export-cases``: case rendering (YAML that survives a round
trip, or JSON lines), atomic writes, ``manifest.json`` (content hash = dataset version) and
``CHANGELOG.md``. The case files on disk are the truth; see :class:`Dataset`."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from stream.export_cases import ExportOptions, ExportReport


CASE_FORMAT_VERSION = 1
SETS: tuple[str, ...] = ("blocking", "monitoring", "backlog")
_CASE_FILE = re.compile(r"^case-[0-9a-f]{16}\.yaml$")


class ExportError(ValueError):
    """Bad options, a bad rules file or a dataset directory that cannot be updated safely."""


# ---- rendering --------------------------------------------------------------------------------


class _CaseDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # a value shared by two keys is written twice, never as &anchor / *alias


def _represent_str(dumper: yaml.SafeDumper, s: str) -> yaml.ScalarNode:
    # PyYAML folds NEL / LS / PS inside plain and single-quoted scalars: force double quotes
    if any(c in s for c in "\x85\u2028\u2029"):
        return dumper.represent_scalar("tag:yaml.org,2002:str", s, style='"')
    # multi-line text as a literal block where YAML allows it (PyYAML falls back to quotes)
    return dumper.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None)


_CaseDumper.add_representer(str, _represent_str)


_LINE_BREAKS = str.maketrans({c: f"\\u{ord(c):04x}" for c in "\x85\u2028\u2029"})


def render(case: Mapping[str, Any], fmt: str) -> bytes:
    """The case's bytes: a YAML document (verified to load back equal), or one JSON line."""
    if fmt == "jsonl":
        text = json.dumps(case, ensure_ascii=False, separators=(",", ":"))
        # escaped like JSON's control characters: readers that split lines on them stay correct
        return text.translate(_LINE_BREAKS).encode("utf-8")
    for allow_unicode in (True, False):
        text = yaml.dump(dict(case), Dumper=_CaseDumper, allow_unicode=allow_unicode, sort_keys=False, width=100)
        if yaml.safe_load(text) == case:
            return text.encode("utf-8")
    raise ExportError(f"{case.get('id')}: the case does not survive a YAML round trip")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- the dataset directory ----------------------------------------------------------------------

_CHANGELOG_HEAD = b"# Changelog\n\nOne entry per `tracejudge export-cases` run that changed the dataset.\n"


def _write(path: Path, data: bytes) -> None:
    """Write through a temporary file and a rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass
class _Entry:
    set: str
    data: bytes  # the case's bytes: the whole file (yaml) or its line (jsonl)
    doc: dict[str, Any] | None = None  # set for cases written by this export


class Dataset:
    """The files of a dataset directory. The case files on disk are the truth (a human may edit or
    delete them); ``manifest.json`` is rewritten from them after every export and the previous one
    is what the changelog entry is computed against."""

    def __init__(self, root: Path, fmt: str) -> None:
        self.root, self.fmt = root, fmt
        self.previous: dict[str, dict[str, Any]] = {}
        self.previous_version: str | None = None
        self.current: dict[str, _Entry] = {}
        self.new: dict[str, _Entry] = {}
        self.dropped: set[str] = set()

    @classmethod
    def open(cls, root: Path, fmt: str) -> Dataset:
        ds = cls(root, fmt)
        manifest = root / "manifest.json"
        if manifest.exists():
            try:
                doc = json.loads(manifest.read_text(encoding="utf-8"))
                ds.previous = {c["id"]: c for c in doc["cases"]}
                ds.previous_version = doc["dataset_version"]
                found = doc["file_format"]
            except (ValueError, KeyError, TypeError) as exc:
                raise ExportError(f"{manifest}: not a dataset manifest ({exc}); move it away to start over") from None
            if found != fmt:
                raise ExportError(f"{root} holds a {found} dataset: export with --format {found} or to another --out")
        for s in SETS:
            d = root / s
            other = (d / "cases.jsonl").exists() if fmt == "yaml" else any(d.glob("case-*.yaml"))
            if other:
                raise ExportError(f"{d} holds cases in the other format: export with that --format or to another --out")
            if fmt == "yaml":
                for p in sorted(d.glob("case-*.yaml")):
                    if _CASE_FILE.match(p.name):
                        ds._found(p.stem, s, p.read_bytes(), p)
            elif (d / "cases.jsonl").exists():
                for n, line in enumerate((d / "cases.jsonl").read_bytes().split(b"\n"), 1):
                    if line.strip():
                        ds._found(ds._line_id(line, d / "cases.jsonl", n), s, line, d / "cases.jsonl")
        return ds

    def _found(self, cid: str, s: str, data: bytes, path: Path) -> None:
        if cid in self.current:
            raise ExportError(f"case {cid} is in both {self.current[cid].set} and {s} ({path}): keep one")
        self.current[cid] = _Entry(s, data)

    @staticmethod
    def _line_id(line: bytes, path: Path, n: int) -> str:
        try:
            return str(json.loads(line)["id"])
        except (ValueError, KeyError, TypeError):
            raise ExportError(f"{path}:{n}: not a case (JSON object with an id)") from None

    def _file(self, cid: str, s: str) -> str:
        return f"{s}/{cid}.yaml" if self.fmt == "yaml" else f"{s}/cases.jsonl"

    def existing_doc(self, cid: str) -> dict[str, Any] | None:
        """The case as it is on disk now (to keep what a human added to it), or None."""
        entry = self.current.get(cid)
        if entry is None:
            return None
        try:
            doc = yaml.safe_load(entry.data) if self.fmt == "yaml" else json.loads(entry.data)
        except (yaml.YAMLError, ValueError) as exc:
            raise ExportError(f"{self.root / self._file(cid, entry.set)}: cannot be read ({exc}); fix or delete it") from None
        return doc if isinstance(doc, dict) else None

    def put(self, case: dict[str, Any]) -> None:
        self.new[case["id"]] = _Entry(case["set"], render(case, self.fmt), case)

    def has(self, cid: str) -> bool:
        """A case of that id is on disk and not written or dropped by this export."""
        return cid in self.current and cid not in self.new and cid not in self.dropped

    def drop(self, cid: str) -> None:
        """Remove a case at :meth:`commit` (its file, or its line)."""
        self.dropped.add(cid)

    def commit(self, report: ExportReport, options: ExportOptions) -> None:
        """Write changed case files, then the changelog entry, then the manifest (the commit point)."""
        final = {cid: e for cid, e in {**self.current, **self.new}.items() if cid not in self.dropped}
        touched_sets: set[str] = set()
        for cid in sorted(self.dropped):
            gone = self.current[cid]
            touched_sets.add(gone.set)
            if self.fmt == "yaml":
                (self.root / self._file(cid, gone.set)).unlink(missing_ok=True)
        for cid, e in sorted(self.new.items()):
            old = self.current.get(cid)
            if old is not None and old.set == e.set and old.data == e.data:
                report.unchanged += 1
                continue
            touched_sets.update({e.set, old.set} if old else {e.set})
            if self.fmt == "yaml":
                if old is not None and old.set != e.set:
                    (self.root / self._file(cid, old.set)).unlink(missing_ok=True)
                _write(self.root / self._file(cid, e.set), e.data)
        if self.fmt == "jsonl":
            for s in sorted(touched_sets):
                lines = [e.data for _, e in sorted(final.items()) if e.set == s]
                _write(self.root / s / "cases.jsonl", b"".join(line + b"\n" for line in lines))
        cases = [{"id": cid, "set": e.set, "file": self._file(cid, e.set), "sha256": sha256(e.data)}
                 for cid, e in sorted(final.items())]  # fmt: skip
        version = sha256("".join(f"{c['id']} {c['set']} {c['sha256']}\n" for c in cases).encode())
        report.dataset_version, report.total = version, len(cases)
        report.per_set = {s: sum(1 for c in cases if c["set"] == s) for s in SETS}
        now = {c["id"]: c for c in cases}
        for cid, c in now.items():
            before = self.previous.get(cid)
            if before is None:
                report.added.append(cid)
            elif before.get("set") != c["set"]:
                report.moved.append(cid)
            elif before.get("sha256") != c["sha256"]:
                report.updated.append(cid)
        report.removed = sorted(set(self.previous) - set(now))
        if report.changed:
            self._append_changelog(report, options)
        manifest = {
            "format": "tracejudge.eval_cases", "case_format_version": CASE_FORMAT_VERSION,
            "file_format": self.fmt, "dataset_version": version, "sets": report.per_set, "cases": cases,
        }  # fmt: skip
        data = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        path = self.root / "manifest.json"
        if not path.exists() or path.read_bytes() != data:
            _write(path, data)

    def _describe(self, cid: str) -> str:
        e = self.new.get(cid)
        if e is None or e.doc is None:
            return f"`{cid}`"
        src = e.doc.get("source") or {}
        # service and agent names are trace content: in code spans, so Markdown cannot forge a heading,
        # an entry or an image in the changelog
        who = " / ".join(_code(x) for x in (src.get("service"), src.get("agent")) if x)
        return f"`{cid}` {e.doc.get('category')}, trace `{src.get('trace_id')}`" + (f" ({who})" if who else "")

    def _append_changelog(self, r: ExportReport, o: ExportOptions) -> None:
        final_sets = {cid: e.set for cid, e in {**self.current, **self.new}.items()}
        what = f"judge {o.judge}" if o.judge else "every judge" + (" and gate-only failures" if o.label == "fail" else "")
        lines = [
            "", f"## Dataset version {r.dataset_version[:12]}", "",
            f"- previous version: {self.previous_version[:12] if self.previous_version else 'none'}",
            f"- export: label `{o.label}`, {what}, window [{iso_ms(parse_time(o.since))}, {iso_ms(parse_time(o.until))})",
            f"- {len(r.added)} added, {len(r.updated)} updated, {len(r.moved)} moved, {len(r.removed)} removed; "
            f"{r.total} cases ({', '.join(f'{s} {n}' for s, n in r.per_set.items())})", "",
        ]  # fmt: skip
        lines += [f"- added to {final_sets[c]}: {self._describe(c)}" for c in r.added]
        lines += [f"- updated in {final_sets[c]}: {self._describe(c)}" for c in r.updated]
        lines += [f"- moved {self.previous[c].get('set')} → {final_sets[c]}: {self._describe(c)}" for c in r.moved]
        lines += [f"- removed from {self.previous[c].get('set')}: `{c}`"
                  + (" (a failing verdict's case replaces it)" if c in r.superseded else "") for c in r.removed]  # fmt: skip
        path = self.root / "CHANGELOG.md"
        head = b"" if path.exists() else _CHANGELOG_HEAD
        self.root.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as f:
            f.write(head + ("\n".join(lines) + "\n").encode("utf-8"))


def parse_time(text: str) -> int:
    """An ISO date or date-time (UTC when it has no offset) as Unix milliseconds."""
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ExportError(f"not an ISO date/time: {text[:64]!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def iso_ms(ms: int) -> str:
    dt = datetime.fromtimestamp(ms // 1000, UTC)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def _code(text: object) -> str:
    """``text`` as one Markdown code span on one line: control characters and backticks replaced."""
    clean = re.sub(r"[\x00-\x1f\x7f-\x9f]", " ", str(text)).replace("`", "'")
    return f"`{clean[:200]}`"
