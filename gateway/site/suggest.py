"""The one "did you mean": the known names closest to a name nobody knows, for error messages
about the site file, its point list and recordings."""

from __future__ import annotations

import difflib
from collections.abc import Collection


def did_you_mean(word: str, choices: Collection[str], n: int = 1) -> str:
    """' (did you mean 'x'?)' (up to `n` names: 'x', 'y' or 'z') when choices are close to
    `word`, else ''. A choice differing only in case comes first and alone: that is the one.

    >>> did_you_mean("Flow", ["flow", "level"])
    " (did you mean 'flow'?)"
    >>> did_you_mean("dma1.flw", ["dma1.flow", "dma1.flows", "dma2.level"], n=3)
    " (did you mean 'dma1.flow' or 'dma1.flows'?)"
    >>> did_you_mean("zzz", ["flow"])
    ''
    """
    close = [c for c in choices if c.lower() == word.lower()][:1] or difflib.get_close_matches(
        word, list(choices), n=n)
    if not close:
        return ""
    names = [f"'{c}'" for c in close]
    shown = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
    return f" (did you mean {shown}?)"
