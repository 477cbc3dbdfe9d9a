"""gunicorn: what its workers hold at once depends on their class (gunicorn/workers/
in its source; the arithmetic below is 20.1's, Debian 12's):

- sync (the default): one request at a time per worker, and every response closes
  its connection (SyncWorker.handle_request forces Connection: close): it serves
  `workers` at once and holds none idle;
- gthread (`-k gthread`, or sync with `--threads` > 1): a worker accepts while its
  connections are fewer than `--worker-connections` (default 1000) and keeps a
  connection alive after its response only while fewer than worker_connections -
  threads wait idle (`max_keepalived`, ThreadWorker.handle_request); past that it
  answers and closes. It holds workers x (worker_connections - threads) idle, and
  up to threads - 1 more per worker when requests end together (a thread checks the
  kept count before the pool's callback appends its connection: handle_request
  against finish_request);
- the async classes (eventlet, gevent, tornado): `--worker-connections` greenlets per
  worker, workers x worker_connections;
- uvicorn's classes (uvicorn.workers.UvicornWorker): no cap of their own (gunicorn
  passes no limit_concurrency to uvicorn).

Idle connections are closed after `--keep-alive` seconds (default 2): a client that
holds them longer sees them closed. Settings come from the command line, then
GUNICORN_CMD_ARGS, then the config file's plain assignments (-c, default
./gunicorn.conf.py), then the defaults (gunicorn/config.py); the workers counted are
the configured ones, or the running ones when more run (the processes that share the
listener, less the arbiter: TTIN adds workers). Fewer running is a moment: the arbiter
binds before it forks, and respawns a worker that dies (arbiter.py, manage_workers)."""

from __future__ import annotations

import ast
import shlex
from dataclasses import dataclass

from tcpceiling.host.roots import Roots
from tcpceiling.servers import text
from tcpceiling.servers.model import AppLimit, Found, Source

NAME = "gunicorn"
DEFAULTS = {"workers": 1, "threads": 1, "worker_connections": 1000, "keepalive": 2}
ASYNC = ("eventlet", "gevent", "tornado")
CLASSES = {
    "SyncWorker": "sync",
    "ThreadWorker": "gthread",
    "EventletWorker": "eventlet",
    "GeventWorker": "gevent",
    "GeventPyWSGIWorker": "gevent",
    "TornadoWorker": "tornado",
}
FLAGS = {
    "workers": ("-w", "--workers"),
    "threads": ("--threads",),
    "worker_connections": ("--worker-connections",),
    "keepalive": ("--keep-alive",),
    "worker_class": ("-k", "--worker-class"),
}


@dataclass(frozen=True)
class Settings:
    worker_class: str
    workers: int
    threads: int
    worker_connections: int
    keepalive: int
    where: str  # where the settings came from


def matches(comm: str, exe: str) -> bool:
    return comm.startswith("gunicorn")  # the script's name, or setproctitle's title


def matches_cmdline(cmdline: tuple[str, ...]) -> bool:
    """`python3 /usr/bin/gunicorn ...` or `python3 -m gunicorn ...`."""
    words = text.words(cmdline)
    return any(w.endswith("/gunicorn") for w in words[:2]) or _module(words) == "gunicorn"


def _module(words: list[str]) -> str:
    return words[words.index("-m") + 1] if "-m" in words[:-1] else ""


def assignments(source: str) -> dict[str, str]:
    """A config file's top-level `name = literal` lines (never executed)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    out: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                try:
                    out[target.id] = str(ast.literal_eval(node.value))
                except ValueError:
                    continue
    return out


def settings(args: list[str], env_args: str, config: dict[str, str], where: str) -> Settings:
    """The command line first, then GUNICORN_CMD_ARGS, then the config file."""
    extra = shlex.split(env_args) if env_args else []
    got: dict[str, str] = {}
    sources: list[str] = []
    for key, flags in FLAGS.items():
        value = text.flag(args, *flags) or text.flag(extra, *flags) or config.get(key)
        if value is not None:
            got[key] = value
    if any(text.flag(args, *f) for f in FLAGS.values()):
        sources.append("command line")
    if extra:
        sources.append("GUNICORN_CMD_ARGS")
    if config:
        sources.append(where)
    threads = text.to_int(got.get("threads")) or DEFAULTS["threads"]
    cls = worker_class(got.get("worker_class", "sync"))
    if cls == "sync" and threads > 1:
        cls = "gthread"  # gunicorn's own switch (config.py, WorkerClass)
    return Settings(
        worker_class=cls,
        workers=text.to_int(got.get("workers")) or DEFAULTS["workers"],
        threads=threads,
        worker_connections=text.to_int(got.get("worker_connections"))
        or DEFAULTS["worker_connections"],
        keepalive=_keepalive(got.get("keepalive")),
        where=", ".join(sources) or "defaults",
    )


def worker_class(name: str) -> str:
    """`-k` as a short name: 'gthread', 'gunicorn.workers.gthread.ThreadWorker' and
    'egg:gunicorn#gthread' are one class; uvicorn's are kept whole."""
    if "uvicorn" in name:
        return name
    short = name.rsplit("#", 1)[-1].rsplit(".", 1)[-1]
    return CLASSES.get(short, short.lower())


def _keepalive(value: str | None) -> int:
    got = text.to_int(value)
    return DEFAULTS["keepalive"] if got is None else got


def capacity(s: Settings, workers: int) -> tuple[int | None, str]:
    """Connections held at once by `workers` running workers, and how."""
    if "uvicorn" in s.worker_class:
        return None, f"{s.worker_class}: no cap of its own (gunicorn sets no limit_concurrency)"
    if s.worker_class == "gthread":
        idle = max(0, s.worker_connections - s.threads) if s.keepalive else s.threads
        return workers * idle, (
            f"gthread: {workers} worker(s) x (worker_connections {s.worker_connections} - "
            f"threads {s.threads}) idle keep-alive connections (max_keepalived, "
            "workers/gthread.py)"
        )
    if s.worker_class in ASYNC:
        return workers * s.worker_connections, (
            f"{s.worker_class}: {workers} worker(s) x worker_connections "
            f"{s.worker_connections} (workers/base_async.py)"
        )
    return workers, (
        f"sync: {workers} worker(s), one request at a time, each response closing its "
        "connection (workers/sync.py): none held idle"
    )


def read(found: Found, roots: Roots) -> AppLimit:
    args = text.words(found.main.cmdline)
    env = text.process_environ(roots, found.main.pid)
    conf = text.flag(args, "-c", "--config") or "gunicorn.conf.py"
    path = conf if conf.startswith("/") else f"{_cwd(roots, found.main.pid)}/{conf}"
    config = assignments(text.host_file(roots, path))
    s = settings(args, env.get("GUNICORN_CMD_ARGS", ""), config, path)
    running = max(s.workers, len(found.owners) - 1)
    cap, how = capacity(s, running)
    if s.keepalive and cap:
        how += f"; idle ones closed after --keep-alive {s.keepalive} s"
    source: Source = (
        "command line" if "command line" in s.where or "GUNICORN" in s.where else "config"
    )
    if s.where == "defaults":
        source = "default"
    pooled = s.worker_class in ("gthread", *ASYNC)
    return AppLimit(
        server=NAME,
        pid=found.main.pid,
        listen=f"{found.host}:{found.port}",
        setting="worker_connections" if pooled else "workers",
        value=s.worker_connections if pooled else running,
        source=source,
        source_detail=f"{s.where}; {running} worker(s) running",
        capacity=cap,
        in_use=found.established,
        arithmetic=how,
        symptom="past its cap a gthread worker answers and closes (Connection: close); "
        "the others stop accepting and the listen queue fills",
        raise_=_raise(s, running),
        check="http",
        nofile_needed=s.worker_connections + 16 if cap else None,
        nofile=found.main.nofile,
        per_setting=running if pooled else 1,
        own=s.threads if s.worker_class == "gthread" else 0,
    )


def _raise(s: Settings, workers: int) -> str:
    if s.worker_class in ("gthread", *ASYNC):
        return f"--worker-connections {2 * s.worker_connections} (or --workers {2 * workers})"
    return f"--workers {2 * workers}, or -k gthread --threads N to keep connections alive"


def _cwd(roots: Roots, pid: int) -> str:
    try:
        return str((roots.procfs / str(pid) / "cwd").readlink())
    except OSError:
        return ""
