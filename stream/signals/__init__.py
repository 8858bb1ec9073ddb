"""User-experience signals mined from assembled traces.

* :mod:`stream.signals.base` — :class:`Signal` and the :class:`SignalMiner` protocol;
* :mod:`stream.signals.lexicon` — per-language phrase lexicons (``lexicons/<lang>.yaml``);
* :mod:`stream.signals.semantic` — the lexicon-based miner (:func:`build_miner`) over a trace's
  user messages (:mod:`schemas.user_messages`, extracted once per trace and shared with the gates
  and the judges' prompts);
* :mod:`stream.signals.actions` — signals from explicit user actions (regenerate, thumbs down).
"""
