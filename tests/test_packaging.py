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


def _pins(lines: list[str]) -> dict[str, str]:
    """name -> version of the ``name[extras]==version`` requirements among ``lines`` (names
    normalized as pip does)."""
    out = {}
    for line in lines:
        req = line.split("#", 1)[0].split(";", 1)[0].strip()
        if "==" in req:
            name, version = req.split("==", 1)
            out[name.split("[", 1)[0].strip().lower().replace("_", "-").replace(".", "-")] = version.strip()
    return out


def test_every_pin_in_pyproject_is_the_version_constraints_txt_installs() -> None:
    """A fresh install resolves pyproject.toml's pins with ``-c constraints.txt``: a pin changed in
    one and not the other makes the install fail (ResolutionImpossible)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = _pins([*project["dependencies"], *(r for extra in project["optional-dependencies"].values()
                                                  for r in extra)])  # fmt: skip
    constrained = _pins((ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines())
    assert len(declared) >= 15 and len(constrained) >= len(declared)
    differ = {n: (v, constrained.get(n)) for n, v in declared.items() if n in constrained and constrained[n] != v}
    assert differ == {}, f"pyproject.toml vs constraints.txt: {differ}"
