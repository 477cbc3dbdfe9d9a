"""Command line: one module per command, each parsing its options, calling the
library and rendering; no logic lives here.

Exit codes: 0 success (probe: target reached), 1 a limit or guard stopped a probe,
2 bad input, 3 the host could not be read.
"""

from __future__ import annotations

# Each command module registers its command on `main` when imported.
from tcpceiling.cli import (  # noqa: F401
    analyze,
    compare_io,
    doctor,
    exporter,
    probe,
    rate,
    report,
    serve,
    snapshot,
    tour,
    trace,
    tune,
    watch,
)
from tcpceiling.cli.common import main
from tcpceiling.cli.usage import USAGE, apply

__all__ = ["USAGE", "main", "run"]

apply(main)


def run() -> None:
    """The console entry point (see OneLineErrors); named tcpceiling also under
    `python -m tcpceiling`, so shell completion's variable is _TCPCEILING_COMPLETE."""
    main(prog_name="tcpceiling")
