"""Sizes as people write them: one parser for every byte-count option."""

from __future__ import annotations

import re

from tcpceiling.errors import InputError

#: Binary units, as the kernel's own files count (meminfo's "kB" is 1024 bytes).
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGTP]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_bytes(text: str) -> int:
    """'1073741824', '512M', '512MiB', '1.5G', '64k' -> bytes (binary units: 1K = 1024;
    a trailing B, iB or i is optional). Negative, empty or non-finite sizes are errors."""
    m = _SIZE.match(text)
    if not m:
        raise InputError(
            f"bad byte count {text!r}: expected a number with an optional unit "
            "K, M, G, T (binary), e.g. 1073741824, 512M, 512MiB, 1.5G"
        )
    number, unit = m.group(1), m.group(2).upper()
    whole, _, frac = number.partition(".")
    scale = UNITS[unit]
    value = int(whole or "0") * scale
    if frac:
        value += int(frac) * scale // 10 ** len(frac)
    return value


def format_bytes(n: float) -> str:
    """Bytes in binary units with one decimal (800 B, 4.3 MiB, 4.1 GiB): the same
    units parse_bytes reads."""
    for unit in ("P", "T", "G", "M", "K"):
        if abs(n) >= UNITS[unit]:
            return f"{n / UNITS[unit]:.1f} {unit}iB"
    return f"{n:.0f} B"
