"""nginx: `worker_connections` per worker (default 512). A worker spends one
connection on each listening socket and one on its channel to the master
(ngx_worker_process_init, src/os/unix/ngx_process_cycle.c), and when fewer than
worker_connections/16 are free it closes idle keep-alive connections to admit new
ones (ngx_drain_connections, src/core/ngx_connection.c: "worker_connections are not
enough, reusing connections"). So each worker serves worker_connections - listeners
- 1 - worker_connections/16 idle clients at once, and the server that many times its
running workers. Each connection is an fd: the worker's nofile (worker_rlimit_nofile)
must be at least worker_connections.

A listener that proxies (servers.nginx_proxy) spends two connections on each client,
its own and the one toward the upstream, and nothing is drained (a proxied request's
connections are not idle keep-alive ones): a worker serves (worker_connections -
listeners - 1) // 2 proxied clients at once."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

from tcpceiling.host.roots import Roots
from tcpceiling.servers import nginx_proxy, text
from tcpceiling.servers.model import AppLimit, Found, Source, Upstream

NAME = "nginx"
DEFAULT_CONNECTIONS = 512  # src/event/ngx_event.c, ngx_event_core_init_conf
DRAIN_SHARE = 16


@dataclass(frozen=True)
class NginxConf:
    worker_connections: int | None
    worker_processes: str | None  # a number or "auto"
    worker_rlimit_nofile: int | None


def matches(comm: str, exe: str) -> bool:
    return comm == "nginx" or exe.endswith("/nginx")


def _directive(conf: str, name: str) -> str | None:
    """The last `name VALUE;` in the text, comments removed."""
    body = "\n".join(line.split("#", 1)[0] for line in conf.splitlines())
    found = re.findall(rf"(?:^|[\s;{{}}]){name}\s+([^;]+);", body)
    return found[-1].strip() if found else None


def parse_conf(conf: str) -> NginxConf:
    """worker_connections, worker_processes, worker_rlimit_nofile from a
    configuration (nginx -T prints every included file in one text)."""
    return NginxConf(
        text.to_int(_directive(conf, "worker_connections")),
        _directive(conf, "worker_processes"),
        text.to_int(_directive(conf, "worker_rlimit_nofile")),
    )


def master_args(cmdline: tuple[str, ...]) -> list[str]:
    """The master's -p/-c/-g options. nginx rewrites its argv into one string
    ("nginx: master process /usr/sbin/nginx -c FILE -g daemon off;"): split it."""
    words = " ".join(cmdline).split()
    if "process" in words:
        words = words[words.index("process") + 2 :]
    out: list[str] = []
    i = 0
    while i < len(words):
        if words[i] in ("-p", "-c") and i + 1 < len(words):
            out += words[i : i + 2]
            i += 2
        elif words[i] == "-g":
            rest = []
            i += 1
            while i < len(words) and not words[i].startswith("-"):
                rest.append(words[i])
                i += 1
            out += ["-g", " ".join(rest)]
        else:
            i += 1
    return out


def conf_path(args: list[str]) -> str:
    """The -c file as the master was started with it (relative to -p's prefix)."""
    conf = text.flag(args, "-c") or "/etc/nginx/nginx.conf"
    if not conf.startswith("/"):
        conf = (text.flag(args, "-p") or "/usr/share/nginx/").rstrip("/") + "/" + conf
    return conf


def dump_config(found: Found, roots: Roots) -> tuple[str, Source, str]:
    """`nginx -T` of the running binary with the master's options (the server reading
    its own configuration, includes and all); else the -c file as it is."""
    args = master_args(found.main.cmdline)
    exe = found.main.exe or "nginx"
    if roots.live:
        try:
            done = subprocess.run(
                [exe, "-T", *args], capture_output=True, text=True, timeout=10, check=False
            )
            if done.returncode == 0 and done.stdout:
                return done.stdout, "server", f"{exe} -T {' '.join(args)}".strip()
        except (OSError, subprocess.TimeoutExpired):
            pass
    conf = conf_path(args)
    return text.host_file(roots, conf), "config", conf


#: How much of the end of the error log is read for nginx's own words.
LOG_TAIL = 1 << 16


def last_complaint(log: str, words: str = "worker_connections are not enough") -> str:
    """The last line of an error log that holds `words` (nginx's own at a limit)."""
    return text.last_line(log, words)


#: nginx's words when it cannot connect to an upstream (ngx_event_connect_peer logs
#: connect()'s errno at crit; ngx_http_upstream_next "no live upstreams" at error)
UPSTREAM_WORDS = "while connecting to upstream"


#: connect()'s errno as nginx logs it when no port is left toward an upstream
OUT_OF_PORTS = "(99: Cannot assign requested address)"
UPSTREAM_SYMPTOM = (
    "nginx logs 'connect() to ADDR failed (99: Cannot assign requested address) while "
    "connecting to upstream' and answers its client 502 Bad Gateway"
)


def error_log(conf: str, roots: Roots) -> str:
    """The end of nginx's top-level error_log (the first error_log directive of the
    configuration), read once for all its words. nginx logs its cap's words at warn
    (ngx_drain_connections): the default level, error, hides them."""
    path = _directive_first(conf, "error_log")
    return text.tail(roots, path.split()[0], LOG_TAIL) if path else ""


def proxied(body: str, port: int, prefix: str) -> tuple[bool, tuple[Upstream, ...]]:
    """Whether the server listening on `port` passes its requests on (location `/`
    first), and where to, each upstream once (none counted for a target chosen per
    request or a transparent proxy_bind: the ports are not the proxy's own)."""
    root = nginx_proxy.tree(body, prefix)
    listener = nginx_proxy.listeners(root).get(port)
    if listener is None or not listener.locations:
        return False, ()
    ups = (nginx_proxy.upstream_for(root, loc) for loc in listener.locations)
    unique = {u.name: u for u in ups if u is not None and u.servers}
    return True, tuple(unique.values())


def _directive_first(conf: str, name: str) -> str | None:
    body = "\n".join(line.split("#", 1)[0] for line in conf.splitlines())
    found = re.findall(rf"(?:^|[\s;{{}}]){name}\s+([^;]+);", body)
    return found[0].strip() if found else None


def read(found: Found, roots: Roots) -> AppLimit:
    body, source, detail = dump_config(found, roots)
    conf = parse_conf(body)
    wc = conf.worker_connections or DEFAULT_CONNECTIONS
    if conf.worker_connections is None:
        source, detail = "default", "nginx default worker_connections"
    workers = [p for p in found.owners if p.ppid == found.main.pid] or [found.main]
    prefix = conf_path(master_args(found.main.cmdline)).rpartition("/")[0] or "/etc/nginx"
    passes, upstreams = proxied(body, found.port, prefix)
    own = found.listeners + 1
    if passes:
        per = max(0, (wc - own) // 2)
        how = (
            f"({wc} - {found.listeners} listener(s) - 1 channel) // 2 connections per "
            f"proxied client (its own and the upstream's)"
        )
    else:
        per = max(0, wc - own - wc // DRAIN_SHARE)
        how = f"({wc} - {found.listeners} listener(s) - 1 channel - {wc}/{DRAIN_SHARE} kept free)"
    nofile = min((w.nofile for w in workers if w.nofile is not None), default=None)
    log = error_log(body, roots)
    said = last_complaint(log, UPSTREAM_WORDS) if upstreams else ""
    return AppLimit(
        server=NAME,
        pid=found.main.pid,
        listen=f"{found.host}:{found.port}",
        setting="worker_connections",
        value=wc,
        source=source,
        source_detail=detail,
        capacity=per * len(workers),
        in_use=found.established,
        arithmetic=f"{len(workers)} worker(s) x {how} = {per * len(workers)} "
        + (
            "(ngx_event_connect_peer, src/event/ngx_event_connect.c)"
            if passes
            else "(ngx_drain_connections, src/core/ngx_connection.c)"
        ),
        symptom=f"{wc} worker_connections are not enough"
        + ("" if passes else ", reusing connections"),
        raise_=f"events {{ worker_connections {wc * 2}; }} and worker_rlimit_nofile "
        f"{wc * 2}" + (" (each proxied client is 2 connections and 2 fds)" if passes else ""),
        check="http",
        nofile_needed=wc,
        nofile=nofile,
        per_setting=len(workers),
        own=own,
        per_client=2 if passes else 1,
        kept_free_share=0 if passes else DRAIN_SHARE,
        evidence=last_complaint(log),
        per_process={w.pid: per for w in workers},
        upstreams=upstreams,
        upstream_words=said,
        upstream_ports_gone=OUT_OF_PORTS in said,
        upstream_symptom=UPSTREAM_SYMPTOM if upstreams else "",
    )


def upstream_fix(limit: AppLimit, up: Upstream, sources: int = 0) -> str:
    """More ports toward `up`, in nginx's words: keep connections alive (a port per
    busy connection, not per request), or bind `sources` source addresses (each brings
    a whole range toward every upstream address; split_clients spreads the clients
    over them; nginx binds with IP_BIND_ADDRESS_NO_PORT), or a wider kernel range."""
    first = up.servers[0].address if up.servers else "ADDR"
    name = "backend" if ":" in up.name else up.name
    n = sources or (max(2, 2 * len(up.servers[0].sources)) if up.servers else 2)
    ways = []
    if not up.keepalive and not sources:
        ways.append(
            f"keep upstream connections alive: upstream {name} {{ server {first}; "
            f"keepalive 64; }} with proxy_pass http://{name}; proxy_http_version 1.1; "
            'proxy_set_header Connection "";'
        )
    ways.append(f"bind {n} source addresses: {split_sources(n)}")
    if not sources:
        ways.append("widen net.ipv4.ip_local_port_range")
    return " | or ".join(ways)


def split_sources(n: int, names: tuple[str, ...] = ()) -> str:
    """nginx lines that spread the clients over n source addresses (SRC1..SRCn when
    none are named): a split_clients block in http {} and proxy_bind in the location.
    split_clients takes percentages with at most two decimals, `*` the rest."""
    addrs = names or tuple(f"SRC{i}" for i in range(1, n + 1))
    share = f"{100 / n:.2f}".rstrip("0").rstrip(".")
    shares = " ".join(f"{share}% {a};" for a in addrs[:-1])
    return (
        f"split_clients $remote_addr$remote_port $proxy_source {{ {shares} * {addrs[-1]}; }} "
        "with proxy_bind $proxy_source;"
    )
