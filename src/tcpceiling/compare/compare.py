"""Threads vs epoll at the same N: two probe runs on loopback, one table.

Each run holds N connections to the built-in sink in one model, then times
one-byte round trips on random held connections (the cost of waking one of N
blocked threads vs one event loop). Memory per connection is the whole cost:
Slab + KernelStack + PageTables growth plus every process's RSS growth.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

from tcpceiling.analysis.model import IoModel
from tcpceiling.probe.run.config import ProbeConfig
from tcpceiling.probe.run.coordinator import run
from tcpceiling.probe.run.progress import Progress, RunProgress, ignore
from tcpceiling.probe.run.result import MemoryGuard, ProbeResult

MODELS: tuple[IoModel, ...] = ("epoll", "threads")


@dataclass(frozen=True)
class ModelRun:
    io_model: IoModel
    connections: int
    memory_per_connection: float | None  # bytes, everything (see module docstring)
    kernel_bytes: float | None  # of which Slab
    task_bytes: float | None  # of which KernelStack + PageTables
    user_bytes: float | None  # of which RSS
    setup_seconds: float | None  # until the sink held all N
    cpu_seconds: float | None  # every process of the run, while opening
    wake_latency_us: dict[str, float | None]
    stop: str
    stop_detail: str = ""  # e.g. which memory cgroup's line the guard stopped at
    memory_guard: MemoryGuard | None = None


@dataclass(frozen=True)
class Comparison:
    connections: int
    models: tuple[ModelRun, ...]
    memory_ratio: float | None  # threads / epoll, bytes per connection
    verdict: str


def _model_run(r: ProbeResult) -> ModelRun:
    pc = r.per_connection
    return ModelRun(
        io_model=r.io_model,
        connections=r.served or 0,
        memory_per_connection=pc.total_bytes,
        kernel_bytes=pc.kernel_bytes,
        task_bytes=pc.task_bytes,
        user_bytes=pc.user_bytes,
        setup_seconds=r.setup_seconds,
        cpu_seconds=r.cpu_seconds,
        wake_latency_us=r.wake_latency_us or {},
        stop=r.stop.reason,
        stop_detail=r.stop.detail,
        memory_guard=r.memory_guard,
    )


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def verdict(models: tuple[ModelRun, ...]) -> str:
    """Plain words from the measured numbers."""
    by = {m.io_model: m for m in models}
    e, t = by["epoll"], by["threads"]
    mem = _ratio(t.memory_per_connection, e.memory_per_connection)
    setup = _ratio(t.setup_seconds, e.setup_seconds)
    cpu = _ratio(t.cpu_seconds, e.cpu_seconds)
    wake = (t.wake_latency_us.get("p99"), e.wake_latency_us.get("p99"))
    return (
        f"A thread per connection cost {mem}x the memory of one event loop "
        f"({t.memory_per_connection:,.0f} vs {e.memory_per_connection:,.0f} B per connection), "
        f"{setup}x the setup time and {cpu}x the CPU; waking one of {t.connections:,} "
        f"took p99 {wake[0]} us vs {wake[1]} us. Threads also make the task limits "
        "(pid_max, threads-max, pids.max) the ceiling: see analyze --io-model threads."
    )


def _labelled(progress: Progress, model: str, event: RunProgress) -> None:
    progress(replace(event, label=model))


def compare_io(
    connections: int,
    wake_samples: int = 200,
    progress: Progress = ignore,
    base: ProbeConfig | None = None,
) -> Comparison:
    """Run the probe once per model at the same N, and compare. A run interrupted
    (SIGINT, SIGTERM) ends the comparison there: the next model is not started."""
    cfg = base or ProbeConfig()
    runs = []
    for model in MODELS:
        one = replace(cfg, target=connections, io_model=model, wake_samples=wake_samples)
        runs.append(_model_run(run(one, partial(_labelled, progress, model))))
        if runs[-1].stop == "interrupted":
            break
    models = tuple(runs)
    if any(m.stop != "target" for m in models):
        stops = ", ".join(f"{m.io_model}: {m.stop}" for m in models)
        return Comparison(connections, models, None, f"a run stopped short ({stops})")
    ratio = _ratio(models[1].memory_per_connection, models[0].memory_per_connection)
    return Comparison(connections, models, ratio, verdict(models))
