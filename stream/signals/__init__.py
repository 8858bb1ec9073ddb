"""User-experience signals mined from assembled traces.

* :mod:`stream.signals.base` — :class:`Signal` and the :class:`SignalMiner` protocol;
* :mod:`stream.signals.user_messages` — a trace's user messages, extracted once and shared;
* :mod:`stream.signals.lexicon` — per-language phrase lexicons (``lexicons/<lang>.yaml``);
* :mod:`stream.signals.semantic` — the lexicon-based miner (:func:`build_miner`);
* :mod:`stream.signals.actions` — signals from explicit user actions (regenerate, thumbs down).
"""
