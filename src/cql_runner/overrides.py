"""Checks on command-line overrides that run before Hydra, for one-line errors naming the fix.

Hydra rejects an unknown key too, but in several lines that suggest appending it with ``+``,
which a structured config refuses as well; these name the likely key instead.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from typing import Any


def did_you_mean(name: str, choices: Sequence[str], prefix: str = "") -> str:
    """``"did you mean a or b? "`` for the closest choices, or ``""`` when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=2, cutoff=0.6)
    return f"did you mean {' or '.join(prefix + c for c in close)}? " if close else ""


def unknown_key(argv: Sequence[str], schema: Any, groups: Sequence[str] = ()) -> str | None:
    """One-line message for the first ``key=value`` override naming no field of the dataclass
    ``schema`` (or of a dataclass field below it), else None. ``groups`` are config-group names
    that may be overridden although they are no field."""
    root = {f.name: f for f in dataclasses.fields(schema)}
    for arg in argv:
        key, sep, _ = arg.partition("=")
        # Appends, deletions, Hydra's own keys, flags and group paths are Hydra's to judge.
        if not sep or key.startswith(("+", "~", "-", "hydra")) or "/" in key:
            continue
        head, _, rest = key.partition(".")
        if head in groups and head not in root:
            continue
        if head not in root:
            keys = sorted({*root, *groups})
            return f"unknown key '{key}'; {did_you_mean(head, keys)}top-level keys: {', '.join(keys)}"
        child = root[head].default_factory if rest else None
        if not (rest and dataclasses.is_dataclass(child)):
            continue
        fields = sorted(f.name for f in dataclasses.fields(child))
        name = rest.partition(".")[0]
        if name not in fields:
            return (f"unknown key '{key}'; {did_you_mean(name, fields, head + '.')}"
                    f"keys of {head}: {', '.join(fields)}")
    return None
