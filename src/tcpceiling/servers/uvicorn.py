"""uvicorn: `--limit-concurrency N` counts every open connection, idle keep-alive
ones included, and a request that finds N open (its own among them) or N tasks
running is answered 503 Service Unavailable with Connection: close
(HttpToolsProtocol and H11Protocol, uvicorn/protocols/http/; 0.17.6 is Debian
12's). So a worker holds N - 1 served at once; with `--workers W` each worker counts
its own, W x (N - 1). Without the option there is no cap of its own. Idle
connections are closed after `--timeout-keep-alive` seconds (default 5,
uvicorn/config.py); connections not yet accepted wait in `--backlog` (default
2048). Settings come from the command line, then the UVICORN_* environment
variables click reads (UVICORN_LIMIT_CONCURRENCY...)."""

from __future__ import annotations

from dataclasses import dataclass

from tcpceiling.host.roots import Roots
from tcpceiling.servers import text
from tcpceiling.servers.model import AppLimit, Found, Source

NAME = "uvicorn"
DEFAULT_KEEP_ALIVE = 5
DEFAULT_BACKLOG = 2048
SERVICE_UNAVAILABLE = "HTTP/1.1 503 Service Unavailable"


@dataclass(frozen=True)
class Settings:
    limit_concurrency: int | None
    workers: int
    keep_alive: int
    backlog: int
    where: Source


def matches(comm: str, exe: str) -> bool:
    return comm == "uvicorn"


def matches_cmdline(cmdline: tuple[str, ...]) -> bool:
    """`python3 -m uvicorn ...` or a `uvicorn` script run by its interpreter."""
    words = text.words(cmdline)
    if "-m" in words[:-1] and words[words.index("-m") + 1] == "uvicorn":
        return True
    return any(w.endswith("/uvicorn") for w in words[:2])


def settings(args: list[str], env: dict[str, str]) -> Settings:
    """The command line first, then UVICORN_* (click's auto_envvar_prefix)."""

    def get(flag: str, var: str) -> str | None:
        return text.flag(args, flag) or env.get(var)

    limit = text.to_int(get("--limit-concurrency", "UVICORN_LIMIT_CONCURRENCY"))
    given = text.flag(args, "--limit-concurrency") is not None
    return Settings(
        limit_concurrency=limit,
        workers=text.to_int(get("--workers", "UVICORN_WORKERS")) or 1,
        keep_alive=_int(
            get("--timeout-keep-alive", "UVICORN_TIMEOUT_KEEP_ALIVE"), DEFAULT_KEEP_ALIVE
        ),
        backlog=_int(get("--backlog", "UVICORN_BACKLOG"), DEFAULT_BACKLOG),
        where="command line" if given or limit is None else "config",
    )


def _int(value: str | None, default: int) -> int:
    got = text.to_int(value)
    return default if got is None else got


def read(found: Found, roots: Roots) -> AppLimit:
    s = settings(text.words(found.main.cmdline), text.process_environ(roots, found.main.pid))
    running = len(found.owners) - 1 if len(found.owners) > 1 else s.workers
    limit = s.limit_concurrency
    cap = running * (limit - 1) if limit else None
    how = (
        f"{running} worker(s) x (limit_concurrency {limit} - 1): the request that finds "
        f"{limit} connections open, its own among them, is answered 503 "
        "(uvicorn/protocols/http)"
        if limit
        else "no --limit-concurrency: no cap of its own"
    )
    return AppLimit(
        server=NAME,
        pid=found.main.pid,
        listen=f"{found.host}:{found.port}",
        setting="limit_concurrency",
        value=limit,
        source=s.where if limit else "default",
        source_detail=f"--limit-concurrency; {running} worker(s) running",
        capacity=cap,
        in_use=found.established,
        arithmetic=f"{how}; idle ones closed after --timeout-keep-alive {s.keep_alive} s",
        symptom=SERVICE_UNAVAILABLE,
        raise_=f"--limit-concurrency {2 * limit} (or --workers {2 * running})" if limit else "",
        check="http",
        nofile_needed=limit + 16 if limit else None,
        nofile=found.main.nofile,
        per_setting=running,
        offset=-running,
    )
