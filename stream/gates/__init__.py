"""Gates: cheap deterministic checks run on every completed trace (see :mod:`stream.gates.base`)."""
