"""Checks on command-line overrides that run before Hydra, for one-line errors naming the fix.

Hydra rejects an unknown key too, but in several lines that suggest appending it with ``+``,
which a structured config refuses as well; these name the likely key instead. Likewise a
value of the wrong type (``cql.tau=abc``) is caught here and reported in one line with the
project's exit status, rather than as Hydra's five-line error with status 1.
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
            return f"unknown key '{key}'; {did_you_mean(name, fields, head + '.')}keys of {head}: {', '.join(fields)}"
    return None


def _leaf(schema: Any, key: str) -> tuple[Any, str] | None:
    """(dataclass holding the field, field name) for a dotted ``key`` into ``schema``, else None."""
    parts = key.split(".")
    node = schema
    for part in parts[:-1]:
        fields = {f.name: f for f in dataclasses.fields(node)}
        child = fields[part].default_factory if part in fields else None
        if not dataclasses.is_dataclass(child):
            return None
        node = child
    fields = {f.name: f for f in dataclasses.fields(node)}
    field = fields.get(parts[-1])
    # A dataclass-valued field is a config group (``logger=none``): Hydra's to judge.
    if field is None or dataclasses.is_dataclass(field.default_factory):
        return None
    return node, parts[-1]


def bad_value(argv: Sequence[str], schema: Any) -> str | None:
    """One-line message for the first ``key=value`` whose value (or any swept value) the field's
    type refuses, e.g. ``cql.tau=abc``; None when all convert or Hydra should judge the syntax."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf
    from omegaconf.errors import ValidationError

    parser = OverridesParser.create()
    for arg in argv:
        key, sep, raw = arg.partition("=")
        if not sep or key.startswith(("+", "~", "-", "hydra")) or "/" in key:
            continue
        found = _leaf(schema, key)
        if found is None:
            continue
        try:
            override = parser.parse_overrides([arg])[0]
            values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
        except Exception:
            continue  # Hydra reports its own syntax errors
        node_type, name = found
        node = OmegaConf.structured(node_type)
        for value in values:
            try:
                setattr(node, name, value)
            except ValidationError as exc:
                reason = str(exc).strip().splitlines()[0]
                default = getattr(node_type(), name, None) if _constructible(node_type) else None
                example = f"; e.g. {key}={_as_override(default)}" if default is not None else ""
                return f"{key}={raw}: {reason}{example}"
            except Exception:
                break
    return None


def _constructible(node_type: Any) -> bool:
    try:
        node_type()
    except Exception:
        return False
    return True


def _as_override(value: Any) -> str:
    """A value spelled as on the command line: true/false, [a,b] without spaces."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_as_override(v) for v in value) + "]"
    return str(value)
