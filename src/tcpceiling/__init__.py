"""tcpceiling: how many TCP connections can this machine hold, and what stops it.

The library behind the command line::

    from tcpceiling import analyze, build_scenarios, run_probe, ProbeConfig

    result = analyze(build_scenarios("server"))
    print(result.scenarios[0].ceiling, result.scenarios[0].binding)

    proof = run_probe(ProbeConfig(target=10_000))
    print(proof.established, proof.stop.reason, proof.predicted.ceiling)

    tuned, _snapshot = plan_tune(build_scenarios("server")[0], target=1_000_000)
    print([(c.key, c.value) for c in tuned.plan.changes])

Everything named in __all__ is the public API; the rest may change. The probe's
names load on first use, so `analyze` alone stays quick to import. (The probe is
`run_probe`: `tcpceiling.probe` is the subpackage that holds it.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tcpceiling._version import __version__
from tcpceiling.analysis.analyze import analyze
from tcpceiling.analysis.model import (
    Analysis,
    Constraint,
    ConstraintId,
    Endpoint,
    IoModel,
    Role,
    Scenario,
    ScenarioResult,
    build_scenarios,
)
from tcpceiling.errors import HostError, InputError, ParseError, TcpceilingError
from tcpceiling.host.roots import Roots
from tcpceiling.results import SCHEMA_VERSION, document

if TYPE_CHECKING:
    from tcpceiling.probe.run.config import ProbeConfig
    from tcpceiling.probe.run.coordinator import run as run_probe
    from tcpceiling.probe.run.result import PerConnection, Predicted, ProbeResult, Stop, StopReason
    from tcpceiling.tune.model import TunePlan
    from tcpceiling.tune.run import TuneResult
    from tcpceiling.tune.run import build as plan_tune

_LAZY = {
    "ProbeConfig": ("tcpceiling.probe.run.config", "ProbeConfig"),
    "run_probe": ("tcpceiling.probe.run.coordinator", "run"),
    "ProbeResult": ("tcpceiling.probe.run.result", "ProbeResult"),
    "Stop": ("tcpceiling.probe.run.result", "Stop"),
    "StopReason": ("tcpceiling.probe.run.result", "StopReason"),
    "Predicted": ("tcpceiling.probe.run.result", "Predicted"),
    "PerConnection": ("tcpceiling.probe.run.result", "PerConnection"),
    "plan_tune": ("tcpceiling.tune.run", "build"),
    "TuneResult": ("tcpceiling.tune.run", "TuneResult"),
    "TunePlan": ("tcpceiling.tune.model", "TunePlan"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'tcpceiling' has no attribute {name!r}")


__all__ = [
    "SCHEMA_VERSION",
    "Analysis",
    "Constraint",
    "ConstraintId",
    "Endpoint",
    "HostError",
    "InputError",
    "IoModel",
    "ParseError",
    "PerConnection",
    "Predicted",
    "ProbeConfig",
    "ProbeResult",
    "Role",
    "Roots",
    "Scenario",
    "ScenarioResult",
    "Stop",
    "StopReason",
    "TcpceilingError",
    "TunePlan",
    "TuneResult",
    "__version__",
    "analyze",
    "build_scenarios",
    "document",
    "plan_tune",
    "run_probe",
]
