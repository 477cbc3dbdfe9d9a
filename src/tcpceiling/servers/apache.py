"""Apache httpd: what its MPM serves at once, from the running server's MPM (the
mod_mpm_*.so in its memory maps) and its configuration (servers.apache_conf).

- prefork: one process per connection, MaxRequestWorkers of them (at most
  ServerLimit, default 256; server/mpm/prefork/prefork.c prefork_check_config).
- worker: one thread per connection, keep-alive ones too: MaxRequestWorkers threads,
  rounded down to a multiple of ThreadsPerChild, in at most ServerLimit processes
  (defaults 16 x 25; server/mpm/worker/worker.c worker_check_config).
- event: idle keep-alive connections wait in the listener thread's pollset, not in a
  worker thread. A process accepts while its connections (less those lingering to
  close) are fewer than ThreadsPerChild + idle workers x AsyncRequestWorkerFactor, the
  factor taken whole (worker_factor / WORKER_FACTOR_SCALE, default 2;
  connections_above_limit, server/mpm/event/event.c), and otherwise takes its
  listeners out of its pollset. With every held connection idle, every worker is
  idle: a process holds ThreadsPerChild x (1 + factor), and the server that many
  times MaxRequestWorkers / ThreadsPerChild processes (at most ServerLimit).

Past the cap no process accepts: new connections wait in the listen queue
(ListenBacklog, default 511) and get no answer. The processes the MPM may run are
started as it needs them (perform_idle_server_maintenance, once a second, doubling
up to 32 at a time): the arithmetic is the most it reaches. At the cap the MPMs log
"server reached MaxRequestWorkers setting" (prefork AH00161; worker AH00286; event
AH00484) in the ErrorLog."""

from __future__ import annotations

import glob as globbing
import math
import os
from dataclasses import dataclass
from pathlib import Path

from tcpceiling.host.roots import Roots
from tcpceiling.servers import apache_conf, text
from tcpceiling.servers.model import AppLimit, Found, Source

NAME = "apache"
DEFAULT_ROOT = "/etc/apache2"  # Debian's HTTPD_ROOT; SERVER_CONFIG_FILE apache2.conf
DEFAULT_CONF = "apache2.conf"
REACHED = ("AH00161", "AH00286", "AH00484", "server reached MaxRequestWorkers")
#: compiled-in defaults by MPM (DEFAULT_SERVER_LIMIT, DEFAULT_THREAD_LIMIT,
#: DEFAULT_THREADS_PER_CHILD in each MPM's source; MaxRequestWorkers defaults to
#: ServerLimit x ThreadsPerChild)
DEFAULTS = {
    "prefork": {"ServerLimit": 256, "ThreadLimit": 1, "ThreadsPerChild": 1},
    "worker": {"ServerLimit": 16, "ThreadLimit": 64, "ThreadsPerChild": 25},
    "event": {"ServerLimit": 16, "ThreadLimit": 64, "ThreadsPerChild": 25},
}
DEFAULT_FACTOR = 2.0
#: compiled into Debian's apache2 (`apache2 -l`): loaded without a LoadModule
STATIC_MODULES = (
    "core_module",
    "so_module",
    "watchdog_module",
    "http_module",
    "log_config_module",
    "logio_module",
    "version_module",
    "unixd_module",
)


@dataclass(frozen=True)
class Mpm:
    """The MPM's settings after httpd's own checks (each MPM's *_check_config)."""

    mpm: str
    processes: int  # the most processes it runs: MaxRequestWorkers / ThreadsPerChild
    threads_per_child: int
    max_request_workers: int
    factor: int  # AsyncRequestWorkerFactor as event uses it (whole)


def matches(comm: str, exe: str) -> bool:
    return comm in ("apache2", "httpd") or exe.endswith(("/apache2", "/httpd"))


def settle(mpm: str, values: dict[str, str]) -> Mpm:
    """The values as httpd corrects them when it starts."""
    d = DEFAULTS.get(mpm, DEFAULTS["event"])
    limit = max(1, _int(values.get("ServerLimit"), d["ServerLimit"]))
    if mpm == "prefork":
        workers = min(max(1, _int(values.get("MaxRequestWorkers"), limit)), limit)
        return Mpm(mpm, workers, 1, workers, 0)
    thread_limit = max(1, _int(values.get("ThreadLimit"), d["ThreadLimit"]))
    tpc = min(max(1, _int(values.get("ThreadsPerChild"), d["ThreadsPerChild"])), thread_limit)
    workers = max(tpc, _int(values.get("MaxRequestWorkers"), limit * tpc))
    processes = min(workers // tpc, limit)
    factor = _factor(values.get("AsyncRequestWorkerFactor")) if mpm == "event" else 0
    return Mpm(mpm, processes, tpc, processes * tpc, factor)


def _int(value: str | None, default: int) -> int:
    got = text.to_int(value)
    return got if got is not None else default


def _factor(value: str | None) -> int:
    """AsyncRequestWorkerFactor scaled by 16 as set_worker_factor stores it, then
    taken whole where connections_above_limit uses it."""
    try:
        scaled = int(float(value) * 16) if value is not None else int(DEFAULT_FACTOR * 16)
    except ValueError:
        scaled = int(DEFAULT_FACTOR * 16)
    return max(0, scaled) // 16


def capacity(m: Mpm) -> tuple[int, str]:
    """Connections served at once, and the arithmetic with its source."""
    if m.mpm == "prefork":
        return m.max_request_workers, (
            f"prefork: MaxRequestWorkers {m.max_request_workers} processes, one connection "
            "each (prefork.c)"
        )
    if m.mpm == "worker":
        return m.max_request_workers, (
            f"worker: {m.processes} process(es) x ThreadsPerChild {m.threads_per_child}, "
            "a thread per connection, keep-alive ones too (worker.c)"
        )
    per = m.threads_per_child * (1 + m.factor)
    return m.processes * per, (
        f"event: {m.processes} process(es) (MaxRequestWorkers {m.max_request_workers} / "
        f"ThreadsPerChild {m.threads_per_child}) x {m.threads_per_child} x (1 + "
        f"AsyncRequestWorkerFactor {m.factor}) idle keep-alive connections each "
        "(connections_above_limit, event.c)"
    )


def read_config(found: Found, roots: Roots) -> tuple[apache_conf.Context, str]:
    """The running server's configuration: its main file (-f, relative to -d or
    the default ServerRoot), its environment for ${VAR}, its -D defines, its MPM."""
    pid = found.main.pid
    conf, root, defines = apache_conf.start_options(text.words(found.main.cmdline))
    env = text.process_environ(roots, pid)
    root = root or env.get("APACHE_CONFDIR") or DEFAULT_ROOT
    main = apache_conf.absolute(conf or DEFAULT_CONF, root)
    mpm = apache_conf.running_mpm(_proc_bytes(roots, pid, "maps").decode(errors="replace"))
    ctx = apache_conf.Context(set(STATIC_MODULES), defines, env, root, mpm)
    read_file = lambda p: text.host_file(roots, p)  # noqa: E731
    return apache_conf.evaluate(main, read_file, _globber(roots), ctx), main


def _proc_bytes(roots: Roots, pid: int, name: str) -> bytes:
    try:
        return (roots.procfs / str(pid) / name).read_bytes()
    except OSError:
        return b""


def _globber(roots: Roots) -> apache_conf.Globber:
    """Files a path, directory or glob names on the host the Roots stand for."""
    base = Path("/") if roots.live else roots.procfs.parent

    def found(pattern: str) -> list[str]:
        where = str(base / pattern.lstrip("/"))
        paths = sorted(globbing.glob(where)) if globbing.has_magic(where) else [where]
        out: list[str] = []
        for p in paths:
            if os.path.isdir(p):
                out += sorted(str(f) for f in Path(p).rglob("*") if f.is_file())
            elif os.path.isfile(p):
                out.append(p)
        return ["/" + os.path.relpath(p, base) for p in out]

    return found


def reached(error_log: str) -> str:
    """The ErrorLog's last line saying it reached MaxRequestWorkers ('' if none)."""
    return text.last_line("\n".join(error_log.splitlines()[-2000:]), *REACHED)


def read(found: Found, roots: Roots) -> AppLimit:
    ctx, main = read_config(found, roots)
    values = {k: v for k, (v, _where) in ctx.values.items()}
    m = settle(ctx.mpm or "event", values)
    cap, how = capacity(m)
    source: Source = "config" if ctx.values else "default"
    where = sorted({w.rsplit(":", 1)[0] for _v, w in ctx.values.values()}) or [main]
    log = values.get("ErrorLog", "")
    said = reached(text.host_file(roots, apache_conf.absolute(log, ctx.server_root))) if log else ""
    per_client = m.threads_per_child if m.mpm != "prefork" else 1
    per_setting = m.threads_per_child * (1 + m.factor) if m.mpm == "event" else per_client
    if ctx.mpm is None:
        how += " (MPM not seen in the running process: event assumed)"
    return AppLimit(
        server=NAME,
        pid=found.main.pid,
        listen=f"{found.host}:{found.port}",
        setting="MaxRequestWorkers",
        value=m.max_request_workers,
        source=source,
        source_detail=", ".join(where),
        capacity=cap,
        in_use=found.established,
        arithmetic=how,
        symptom="no process accepts: new connections wait unanswered in the listen queue "
        f"(ListenBacklog {values.get('ListenBacklog', '511')})",
        raise_=_raise(m, cap),
        check="http",
        nofile_needed=math.ceil(cap / max(1, m.processes)) + 16,
        nofile=found.main.nofile,
        evidence=said,
        per_setting=per_setting,
        per_client=per_client,
    )


def _raise(m: Mpm, cap: int) -> str:
    block = f"<IfModule mpm_{m.mpm}_module>"
    if m.mpm == "prefork":
        return f"MaxRequestWorkers {2 * cap} and ServerLimit {2 * cap} in {block}"
    workers = 2 * m.max_request_workers
    return (
        f"MaxRequestWorkers {workers} and ServerLimit >= {workers // m.threads_per_child} "
        f"in {block} (ThreadsPerChild {m.threads_per_child})"
    )
