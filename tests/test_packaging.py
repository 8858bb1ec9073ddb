"""pyproject.toml lists every package directory, so wheels and editable installs carry them all."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROOTS = ("stream", "judges", "schemas")


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]


def _package_dirs() -> set[str]:
    found = set()
    for root in ROOTS:
        for d in [ROOT / root, *(ROOT / root).rglob("*")]:
            if d.is_dir() and "__pycache__" not in d.parts and any(f.is_file() for f in d.iterdir()):
                found.add(".".join(d.relative_to(ROOT).parts))
    return found


def test_every_directory_with_files_is_a_listed_package() -> None:
    listed = set(_setuptools()["packages"])
    dirs = _package_dirs()
    assert "stream.gates" in dirs and "judges.rubrics" in dirs  # the walk sees code and data dirs
    assert dirs - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - dirs == set(), "listed in pyproject.toml but not a directory with files"


def test_every_package_data_pattern_matches_files() -> None:
    for package, patterns in _setuptools()["package-data"].items():
        base = ROOT.joinpath(*package.split("."))
        for pattern in patterns:
            assert list(base.glob(pattern)), f"{package}: {pattern} matches nothing"
