"""Turn result dataclasses into JSON-ready data.

Field names ending in "_" (Python keywords such as `raise_`) lose the underscore;
sets become sorted lists, tuples lists, Paths strings, so every result of the
package serialises with json.dumps and merges across shards and hosts.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any, Literal

from tcpceiling._version import __version__
from tcpceiling.errors import InputError

#: The JSON schema: bumped whenever a field that readers use changes meaning or place.
SCHEMA_VERSION = 1
Kind = Literal[
    "analyze", "probe", "compare-io", "rate", "tune", "doctor", "probe-hosts", "trace", "tour"
]


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


def host_block(identity: Any, netns: str | None) -> dict[str, Any]:
    """The `host` block every result carries: kernel, hostname, time (UTC, of the
    run), network namespace and pid namespace."""
    return {
        "kernel": identity.kernel,
        "hostname": identity.hostname,
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "netns": netns,
        "pid_namespace": identity.pid_namespace,
    }


def document(kind: Kind, result: Any, host: Mapping[str, Any]) -> dict[str, Any]:
    """A result as the JSON document the CLI prints: schema version, which tool
    made it, what kind of result, the host block, then the result's fields (a
    result's own `host` fields are merged into the block)."""
    data = to_data(result)
    block = {**data.pop("host", {}), **host}
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "tcpceiling", "version": __version__},
        "kind": kind,
        "host": block,
        **data,
    }


def check_document(data: Any, kind: Kind, where: str) -> dict[str, Any]:
    """A document read back (e.g. --cost-from): of this schema version and kind."""
    if not isinstance(data, dict):
        raise InputError(f"{where}: not a tcpceiling JSON result")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise InputError(
            f"{where}: schema version {version} (this tcpceiling reads {SCHEMA_VERSION}): "
            f"re-run the {kind} with this version"
        )
    if data.get("kind") != kind:  # checked after the version: an old probe has no kind
        raise InputError(f"{where}: a {data.get('kind')} result, not a {kind} result")
    tool = data.get("tool")
    if not isinstance(tool, dict) or tool.get("name") != "tcpceiling":
        raise InputError(f"{where}: no tcpceiling 'tool' block: not a result tcpceiling wrote")
    return data
