"""Probe a server from many client hosts, on Dask distributed.

One client host opens at most (usable ports x source IPs) connections per
destination and its CPU bounds its rate, so large proofs spread the clients over
machines. Here each Dask worker (one per host) runs the client engine as it runs on
one machine: `tcpceiling probe --connect ... --json-lines --json` as a child process
of the task (the engine uses signals, which only a main thread may handle), with its
own port budget, source IPs and guards. The coordinator:

  1. picks one worker per host (--hosts N of them), gives each its share of the target
     (all of it up to its own limit with --target max);
  2. waits until every host has finished opening (each task puts its host on a Dask
     Queue when its probe reports the holding phase), so all hold at once;
  3. holds --hold seconds, then sets a Dask Event: each task stops its probe with
     SIGINT, which releases and prints its result;
  4. gathers one HostOutcome per host. A worker that leaves the scheduler mid-run is
     named `lost`, the others' numbers kept; the probe child of a killed worker gets
     SIGTERM from the kernel (PR_SET_PDEATHSIG) and releases its connections.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from tcpceiling.errors import InputError

PR_SET_PDEATHSIG = 1
HOLD_BOUND_S = 3600.0  # each host's probe holds at most this long unless released
OPEN_BOUND_S = 900.0  # every host has finished opening within this
Status = Literal["done", "lost", "failed"]


@dataclass(frozen=True)
class HostSpec:
    """What one host runs: the client engine toward `connect`."""

    connect: tuple[str, ...]
    target: int | None  # its share; None: until its own limit
    check: str = "none"
    sources: tuple[str, ...] = ()
    connect_timeout: float = 5.0


@dataclass(frozen=True)
class HostOutcome:
    host: str  # the worker's address on its host
    worker: str
    status: Status
    established: int = 0
    served: int | None = None
    rate_per_s: float = 0.0
    errno_counts: dict[str, int] = field(default_factory=dict)
    stop: str = ""
    side: str | None = None
    detail: str = ""
    predicted: int | None = None  # this host's own ceiling (analyze, on the host)
    binding: str | None = None


@dataclass(frozen=True)
class HostsResult:
    scheduler: str
    target: int | None
    hosts_asked: int
    established: int
    served: int | None
    stop: str  # target | limits (every host at its limit) | host_lost | failed
    detail: str
    hosts: tuple[HostOutcome, ...]
    notes: tuple[str, ...] = ()


def host_of(address: str) -> str:
    """The host of a Dask address: tcp://198.18.0.11:7001 -> 198.18.0.11."""
    return address.split("://")[-1].rsplit(":", 1)[0]


# -- on each worker ---------------------------------------------------------------------
def _die_with_parent() -> None:
    """In the probe child: SIGTERM when the worker that started it dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def probe_argv(spec: HostSpec) -> list[str]:
    argv = [sys.executable, "-m", "tcpceiling", "probe", "--no-isolate", "--quiet"]
    argv += [w for c in spec.connect for w in ("--connect", c)]
    argv += [w for s in spec.sources for w in ("--source-ip", s)]
    argv += ["--target", str(spec.target) if spec.target else "max", "--check", spec.check]
    argv += ["--connect-timeout", str(spec.connect_timeout), "--hold", str(HOLD_BOUND_S)]
    return [*argv, "--json-lines", "--json"]


def _outcome(host: str, worker: str, out: str, err: str) -> HostOutcome:
    """The probe's final JSON document (after its progress lines) as a HostOutcome."""
    start = out.find("\n{\n")
    try:
        doc: dict[str, Any] = json.loads(out[start + 1 :] if start >= 0 else out)
    except ValueError:
        line = (err.strip().splitlines() or ["no result"])[-1]
        return HostOutcome(host, worker, "failed", detail=line)
    stop = doc.get("stop") or {}
    predicted = doc.get("predicted") or {}
    return HostOutcome(
        host, worker, "done", doc["established"], doc.get("served"),
        doc.get("rate_per_s", 0.0), stop.get("errno_counts", {}), stop.get("reason", ""),
        stop.get("side"), stop.get("detail", ""), predicted.get("ceiling"),
        predicted.get("binding"),
    )  # fmt: skip


def run_on_host(spec: HostSpec, run_id: str) -> HostOutcome:
    """The Dask task: run the probe, say when it holds, release on the event."""
    from distributed import Event, Queue, get_worker

    worker = get_worker()
    host = host_of(worker.address)
    proc = subprocess.Popen(
        probe_argv(spec), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_die_with_parent,
    )  # fmt: skip
    lines: list[str] = []
    holding = threading.Event()
    reader = threading.Thread(target=_read, args=(proc, lines, holding), daemon=True)
    reader.start()
    while not holding.wait(0.5) and proc.poll() is None:
        pass
    Queue(f"tcpceiling-opened-{run_id}").put(host)
    if proc.poll() is None:
        Event(f"tcpceiling-release-{run_id}").wait(HOLD_BOUND_S)
        proc.send_signal(signal.SIGINT)
    proc.wait(300)
    reader.join(30)
    err = proc.stderr.read() if proc.stderr else ""
    return _outcome(host, worker.address, "".join(lines), err)


def _read(proc: subprocess.Popen[str], lines: list[str], holding: threading.Event) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if line.startswith('{"phase": "holding"') or line.startswith('{"phase": "releasing"'):
            holding.set()


# -- the coordinator --------------------------------------------------------------------
def _connect(scheduler: str) -> Any:
    from distributed import Client

    try:
        return Client(scheduler, timeout=5, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise InputError(
            f"--scheduler {scheduler}: cannot reach the Dask scheduler ({exc})"
        ) from exc


def one_per_host(workers: dict[str, Any], hosts: int | None) -> list[str]:
    """One worker address per host (the lowest), `hosts` of them if given."""
    by_host: dict[str, str] = {}
    for address in sorted(workers):
        by_host.setdefault(host_of(address), address)
    chosen = sorted(by_host.values())
    if hosts is not None and hosts > len(chosen):
        raise InputError(f"--hosts {hosts}: the scheduler has workers on {len(chosen)} host(s)")
    if not chosen:
        raise InputError("the Dask scheduler has no workers")
    return chosen[:hosts] if hosts else chosen


def _lost(worker: str, why: str) -> HostOutcome:
    return HostOutcome(host_of(worker), worker, "lost", detail=why)


def _wait_opened(client: Any, futures: dict[str, Any], run_id: str) -> None:
    """Until every host holds, has ended, or has left the scheduler."""
    from distributed import Queue

    queue, opened = Queue(f"tcpceiling-opened-{run_id}", client=client), 0
    deadline = time.monotonic() + OPEN_BOUND_S
    while time.monotonic() < deadline:
        live = set(client.scheduler_info()["workers"])
        pending = [w for w, f in futures.items() if not f.done() and w in live]
        if opened >= len(pending) and (opened or not pending):
            return
        with contextlib.suppress(TimeoutError):
            queue.get(timeout=0.5)
            opened += 1


def _gather(client: Any, futures: dict[str, Any]) -> list[HostOutcome]:
    out = []
    for worker, fut in futures.items():
        deadline = time.monotonic() + 330
        while not fut.done() and time.monotonic() < deadline:
            if worker not in client.scheduler_info()["workers"]:
                break
            time.sleep(0.2)
        if not fut.done():
            fut.cancel()
            out.append(_lost(worker, "its Dask worker left the scheduler mid-run"))
            continue
        try:
            out.append(fut.result())
        except Exception as exc:  # a task that raised: a host, not the run, failed
            out.append(_lost(worker, f"{type(exc).__name__}: {exc}"))
    return out


def run_hosts(
    spec: HostSpec, target: int | None, scheduler: str, hosts: int | None, hold: float
) -> HostsResult:
    """Open from every chosen host, hold them all at once, release, and add up."""
    from distributed import Event

    client = _connect(scheduler)
    try:
        chosen = one_per_host(client.scheduler_info()["workers"], hosts)
        share = math.ceil(target / len(chosen)) if target else None
        run_id = uuid.uuid4().hex
        futures = {
            w: client.submit(run_on_host, HostSpec(spec.connect, share, spec.check, spec.sources,
                             spec.connect_timeout), run_id, workers=[w], allow_other_workers=False,
                             pure=False, key=f"tcpceiling-probe-{host_of(w)}-{run_id}")
            for w in chosen
        }  # fmt: skip
        _wait_opened(client, futures, run_id)
        time.sleep(hold)
        Event(f"tcpceiling-release-{run_id}", client=client).set()
        outcomes = _gather(client, futures)
    finally:
        client.close()
    return summarise(scheduler, target, len(chosen), outcomes)


def summarise(
    scheduler: str, target: int | None, asked: int, outcomes: list[HostOutcome]
) -> HostsResult:
    """Totals and why the run ended (pure)."""
    est = sum(o.established for o in outcomes)
    served_parts = [o.served for o in outcomes if o.served is not None]
    served = sum(served_parts) if served_parts else None
    lost = [o for o in outcomes if o.status != "done"]
    if lost:
        names = ", ".join(f"{o.host} ({o.status}: {o.detail})" for o in lost)
        stop, detail = "host_lost", f"lost {names}; the others' numbers are kept"
    elif target is not None and (served if served is not None else est) >= target:
        stop, detail = "target", f"{est:,} established across {asked} hosts"
    else:
        stops = ", ".join(f"{o.host}: {o.stop}" for o in outcomes)
        stop, detail = "limits", f"every host stopped at its own limit ({stops})"
    return HostsResult(scheduler, target, asked, est, served, stop, detail, tuple(outcomes))
