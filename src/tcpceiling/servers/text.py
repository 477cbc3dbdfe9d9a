"""Small pure readers shared by the server modules: command-line flags and
whitespace-separated 'key value' configuration lines."""

from __future__ import annotations

import glob as globbing
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from tcpceiling.host.roots import Roots


def words(cmdline: Sequence[str]) -> list[str]:
    """A command line as words: servers that rewrite their process title (nginx,
    sshd: "sshd: /usr/sbin/sshd -D -f FILE [listener] ...") leave it as one string."""
    if len(cmdline) == 1 and " " in cmdline[0]:
        return cmdline[0].split()
    return list(cmdline)


def flag(args: Sequence[str], *names: str) -> str | None:
    """The value of `-x VALUE`, `--name VALUE` or `--name=VALUE` (the last one given),
    in a command line or a rewritten process title (words())."""
    args = words(args)
    found = None
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                found = args[i + 1]
            elif name.startswith("--") and arg.startswith(name + "="):
                found = arg[len(name) + 1 :]
    return found


def key_values(text: str, sep: str | None = None) -> dict[str, str]:
    """'key value' (or 'key = value' with sep '=') lines; '#' starts a comment; the
    last assignment of a key wins, as in redis.conf, mosquitto.conf, postgresql.conf."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if sep is not None and sep in line:
            key, _, value = line.partition(sep)
        else:
            key, _, value = line.partition(" ")
        out[key.strip().lower()] = value.strip().strip("'\"")
    return out


def running_or_flag(
    running: int | None, said: str, cmdline: Sequence[str], flags: tuple[str, ...], default: int
) -> tuple[int, Literal["server", "command line", "default"], str]:
    """A setting as the server said it (`said`: how), else its command-line flag,
    else its default: (value, source, where)."""
    if running is not None:
        return running, "server", said
    given = to_int(flag(cmdline, *flags))
    if given is not None:
        return given, "command line", flags[0]
    return default, "default", f"default {default}"


def to_int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def host_file(roots: Roots, path: str) -> str:
    """A file of the host the Roots stand for ('' when unreadable): the path itself on
    the live host, else under the fixture tree (beside its proc/ and sys/)."""
    where = Path(path) if roots.live else roots.procfs.parent / path.lstrip("/")
    try:
        return where.read_text()
    except OSError:
        return ""


def host_glob(roots: Roots, pattern: str) -> list[str]:
    """The host's files a glob names (an include line), sorted, as host paths: on the
    live host the glob itself, else under the fixture tree."""
    if roots.live:
        return sorted(globbing.glob(pattern))
    base = roots.procfs.parent
    found = globbing.glob(str(base / pattern.lstrip("/")))
    return sorted("/" + str(Path(p).relative_to(base)) for p in found)


def tail(roots: Roots, path: str, size: int = 1 << 16) -> str:
    """The last `size` bytes of a host file (a server's log: its own words at a limit),
    '' when unreadable; the path is taken as host_file takes it."""
    where = Path(path) if roots.live else roots.procfs.parent / path.lstrip("/")
    try:
        with where.open("rb") as f:
            f.seek(max(0, where.stat().st_size - size))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def open_fds(roots: Roots, pid: int) -> int | None:
    """How many descriptors the process has open (/proc/PID/fd), None if unreadable."""
    try:
        return sum(1 for _ in (roots.procfs / str(pid) / "fd").iterdir())
    except OSError:
        return None


def parse_environ(raw: bytes) -> dict[str, str]:
    """/proc/PID/environ: NUL-separated NAME=VALUE."""
    out: dict[str, str] = {}
    for item in raw.split(b"\0"):
        name, eq, value = item.partition(b"=")
        if eq:
            out[name.decode(errors="replace")] = value.decode(errors="replace")
    return out


def process_environ(roots: Roots, pid: int) -> dict[str, str]:
    """A process's environment as it started ({} when unreadable): where a server's
    settings come from besides its command line (UVICORN_*, MAIL_CONFIG...)."""
    try:
        return parse_environ((roots.procfs / str(pid) / "environ").read_bytes())
    except OSError:
        return {}


def last_line(log: str, *words: str) -> str:
    """The last line of a log that holds any of `words` (a server's own at a limit),
    stripped; '' when none does."""
    for line in reversed(log.splitlines()):
        if any(w in line for w in words):
            return line.strip()
    return ""


def own_fds(roots: Roots, pid: int, connections: int | None) -> int:
    """The descriptors a server holds for itself (its files, listeners, pipes):
    /proc/PID/fd less its `connections` on the port; 0 when it cannot be listed."""
    total = open_fds(roots, pid)
    return max(0, total - (connections or 0)) if total is not None else 0


def reachable(listen_host: str) -> str:
    """An address to reach a listener on: loopback for a wildcard listener."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(listen_host, listen_host)


def resolve(host: str, port: int) -> list[str]:
    """Every address of a name, as a proxy takes them when it starts (libc's
    getaddrinfo, each address a peer: nginx's ngx_parse_url, HAProxy's init-addr libc)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    return list(dict.fromkeys(str(i[4][0]) for i in infos))
