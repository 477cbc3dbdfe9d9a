"""Turn result dataclasses into JSON-ready data.

Field names ending in "_" (Python keywords such as `raise_`) lose the underscore;
sets become sorted lists, tuples lists, Paths strings, so every result of the
package serialises with json.dumps and merges across shards and hosts.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any


def to_data(obj: Any) -> Any:
    """Recursively convert dataclasses, mappings, sets and tuples to JSON types."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name.rstrip("_"): to_data(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if f.repr
        }
    if isinstance(obj, Mapping):
        return {str(k): to_data(v) for k, v in obj.items()}
    if isinstance(obj, set | frozenset):
        return sorted(to_data(v) for v in obj)
    if isinstance(obj, list | tuple):
        return [to_data(v) for v in obj]
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, float):
        return round(obj, 3)
    return obj


def dumps(obj: Any) -> str:
    return json.dumps(to_data(obj), indent=2, sort_keys=False)
