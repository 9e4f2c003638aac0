"""JSON that every parser accepts: NaN and inf become null.

Python's json module writes bare ``NaN``/``Infinity`` by default, which strict parsers
(``jq``, JavaScript, most languages' standard libraries) reject. Summaries go through here.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite_or_null(obj: Any) -> Any:
    """``obj`` with every non-finite float, at any depth, replaced by None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_null(v) for v in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`finite_or_null` (``obj``), refusing anything non-finite left."""
    return json.dumps(finite_or_null(obj), allow_nan=False, **kwargs)
