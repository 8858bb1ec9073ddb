"""Checks for deploy/Dockerfile, the image the compose worker is built from."""

from __future__ import annotations

import re

from tests.deploy.stack import DOCKERFILE


def test_dockerfile_installs_with_constraints():
    text = DOCKERFILE.read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert froms and all(f == "python:3.11-slim" for f in froms), froms
    assert re.search(r"pip install\s+-c constraints\.txt\s", text), "pip install must use -c constraints.txt"
    assert 'CMD ["tracejudge", "worker"]' in text
