"""PHP-FPM: `pm.max_children` of the pool that listens on the port. A pool's child
takes one connection at a time and serves it until the client closes it: with
FCGI_KEEP_CONN (nginx's `fastcgi_keep_conn on`) it waits on it for the next request
(fcgi_accept_request, main/fastcgi.c). Past max_children no child calls accept():
new connections wait unanswered in the pool's listen queue (`listen.backlog`,
default 511), and a web server in front answers 504 once its read timeout passes.

The pool's process manager decides how many children run, never more than
max_children (sapi/fpm/fpm/fpm_process_ctl.c): `static` starts them all, `dynamic`
and `ondemand` fork them as connections wait and log "server reached
pm.max_children setting (N), consider raising it" (dynamic) or "server reached
max_children setting (N)" (ondemand) in the error_log; `static` says nothing.

Where it is read: the master's process title names its configuration file
("php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)"); that file and its
`include` globs hold `[pool]` sections of `key = value` lines (fpm_conf.c, an INI
file: ';' starts a comment, `$pool` stands for the pool's name). A `static` pool's
running children are its running max_children (a reload with SIGUSR2 re-reads the
file; an edit alone does not)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tcpceiling.host.roots import Roots
from tcpceiling.servers import text
from tcpceiling.servers.model import AppLimit, Found, Source

NAME = "php-fpm"
#: fpm's prefix for relative paths (Debian builds --prefix=/usr, --localstatedir=/var)
PREFIX, LOCALSTATE = "/usr", "/var"
DEFAULT_BACKLOG = 511
REACHED = ("reached pm.max_children setting", "reached max_children setting")
_TITLE = re.compile(r"master process \((?P<conf>[^)]+)\)")


@dataclass(frozen=True)
class Pool:
    """One `[name]` section: where it listens and its process manager's settings."""

    name: str
    listen: str
    pm: str
    max_children: int | None
    backlog: int


def matches(comm: str, exe: str) -> bool:
    return comm.startswith("php-fpm") or re.search(r"/php-fpm[0-9.]*$", exe) is not None


def parse_ini(body: str) -> dict[str, dict[str, str]]:
    """`[section]` and `key = value` lines; ';' (and '#') start a comment; quotes
    around a value are dropped; the last assignment wins."""
    out: dict[str, dict[str, str]] = {}
    section = "global"
    for raw in body.splitlines():
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            out.setdefault(section, {})
        elif "=" in line:
            key, _, value = line.partition("=")
            value = value.split(";", 1)[0].strip().strip("'\"")
            out.setdefault(section, {})[key.strip().lower()] = value
    return out


def load(roots: Roots, path: str, depth: int = 0) -> dict[str, dict[str, str]]:
    """The file with its `include` globs read in place (fpm_conf_load_ini_file): a
    relative include is taken from fpm's prefix."""
    conf = parse_ini(text.host_file(roots, path))
    include = conf.get("global", {}).pop("include", "")
    if include and depth < 8:
        pattern = include if include.startswith("/") else f"{PREFIX}/{include}"
        for name in text.host_glob(roots, pattern):
            for section, values in load(roots, name, depth + 1).items():
                conf.setdefault(section, {}).update(values)
    return conf


def pools(conf: dict[str, dict[str, str]]) -> list[Pool]:
    out = []
    for name, values in conf.items():
        if name == "global" or "listen" not in values:
            continue
        listen = values["listen"].replace("$pool", name)
        out.append(
            Pool(
                name=name,
                listen=listen,
                pm=values.get("pm", "dynamic"),
                max_children=text.to_int(values.get("pm.max_children")),
                backlog=text.to_int(values.get("listen.backlog")) or DEFAULT_BACKLOG,
            )
        )
    return out


def listens_on(listen: str, host: str, port: int) -> bool:
    """fpm_sockets.c: `PORT` (every address), `ADDR:PORT`, `[ADDR]:PORT`; a path is a
    UNIX socket."""
    if listen.startswith("/"):
        return False
    addr, _, given = listen.rpartition(":")
    if not given.isdigit() or int(given) != port:
        return False
    addr = addr.strip("[]")
    return addr in ("", "*", "0.0.0.0", "::", host)


def conf_path(cmdline: tuple[str, ...], exe: str) -> str:
    """The file in the master's title, else `-y FILE`, else Debian's path for its
    version (php-fpm8.2 reads /etc/php/8.2/fpm/php-fpm.conf)."""
    title = _TITLE.search(" ".join(cmdline))
    if title:
        return title.group("conf")
    given = text.flag(cmdline, "-y", "--fpm-config")
    if given:
        return given
    version = re.search(r"php-fpm([0-9.]+)$", exe)
    return f"/etc/php/{version.group(1)}/fpm/php-fpm.conf" if version else "/etc/php-fpm.conf"


def error_log(conf: dict[str, dict[str, str]]) -> str:
    path = conf.get("global", {}).get("error_log", "log/php-fpm.log")
    return path if path.startswith("/") else f"{LOCALSTATE}/{path}"


def read(found: Found, roots: Roots) -> AppLimit:
    master = found.main
    path = conf_path(master.cmdline, master.exe)
    conf = load(roots, path)
    pool = next((p for p in pools(conf) if listens_on(p.listen, found.host, found.port)), None)
    children = len(found.owners) - 1
    value, source, detail = _setting(pool, children, path)
    log = text.tail(roots, error_log(conf))
    name = pool.name if pool else "?"
    ours = "\n".join(ln for ln in log.splitlines() if f"[pool {name}]" in ln)
    said = text.last_line(ours, *REACHED)
    return AppLimit(
        server=NAME,
        pid=master.pid,
        listen=f"{found.host}:{found.port}",
        setting="pm.max_children",
        value=value,
        source=source,
        source_detail=detail,
        capacity=value,
        in_use=found.established,
        arithmetic=f"pool {name}: pm.max_children {value}, one connection per child, held "
        "until the client closes it (fcgi_accept_request); past it connections wait "
        f"unanswered in listen.backlog {pool.backlog if pool else DEFAULT_BACKLOG}",
        symptom="clients wait unanswered in the pool's listen queue (a web server in front "
        "answers 504); dynamic and ondemand pools log 'server reached pm.max_children'",
        raise_=f"pm.max_children = {2 * (value or 5)} in [{name}], then reload (SIGUSR2); "
        "each child costs its memory (RSS)",
        check="fastcgi",
        nofile=master.nofile,
        evidence=said,
    )


def _setting(pool: Pool | None, children: int, path: str) -> tuple[int | None, Source, str]:
    """A static pool's running children are its running max_children; else the file."""
    if pool is None:
        return None, "default", f"{path}: no pool listens on this port"
    if pool.pm == "static" and children > 0:
        return children, "server", f"pool {pool.name}: {children} children running (pm static)"
    return pool.max_children, "config", f"{path}: [{pool.name}] pm = {pool.pm}"
