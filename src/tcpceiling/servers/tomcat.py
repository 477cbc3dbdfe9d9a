"""Apache Tomcat: `maxConnections` of the HTTP `<Connector>` on the port (default
8192 for NIO and NIO2). The acceptor thread counts a connection up before it calls
accept() and waits there while the count is at the limit (LimitLatch,
countUpOrAwaitConnection in org.apache.tomcat.util.net.Acceptor): idle keep-alive
connections wait in the poller, not in a thread, so they count and hold no thread.
Past it new connections wait unanswered in the listen queue, `acceptCount` deep
(default 100), and then the kernel drops their handshakes. `maxThreads` (default
200, or its `<Executor>`'s) bounds the requests being processed at once, not the
connections held; `keepAliveTimeout` (default connectionTimeout, 20 s in the shipped
server.xml, 60 s built in) closes the idle ones.

Where it is read: `${catalina.base}/conf/server.xml` (the `-Dcatalina.base=` of
the java command line, or the `-config FILE` given to Bootstrap), read once when
Tomcat starts; `${name}` values are taken from the command line's -D properties."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from tcpceiling.host.roots import Roots
from tcpceiling.servers import text
from tcpceiling.servers.model import AppLimit, Found, Source

NAME = "tomcat"
BOOTSTRAP = "org.apache.catalina.startup.Bootstrap"
DEFAULT_MAX_CONNECTIONS = 8192
DEFAULT_ACCEPT_COUNT = 100
DEFAULT_MAX_THREADS = 200
_PROPERTY = re.compile(r"\$\{([^}]+)\}")


@dataclass(frozen=True)
class Connector:
    port: int
    address: str
    max_connections: int | None  # None: -1, no limit
    given: bool  # maxConnections set in the file (else the default)
    accept_count: int
    max_threads: int


def matches(comm: str, exe: str) -> bool:
    return False  # a java process: told apart by its command line


def matches_cmdline(cmdline: tuple[str, ...]) -> bool:
    return BOOTSTRAP in text.words(cmdline)


def properties(args: list[str]) -> dict[str, str]:
    """The -Dname=value system properties of a java command line."""
    return dict(a[2:].partition("=")[::2] for a in args if a.startswith("-D") and "=" in a)


def server_xml(args: list[str]) -> str:
    given = text.flag(args, "-config")
    if given:
        return given
    props = properties(args)
    base = props.get("catalina.base") or props.get("catalina.home") or "/var/lib/tomcat10"
    return f"{base}/conf/server.xml"


def parse_connectors(body: str, props: dict[str, str]) -> list[Connector]:
    """Every `<Connector port=...>` of server.xml (an AJP one too: it also holds its
    clients' connections), `${name}` values filled from props."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return []
    executors = {
        e.get("name", ""): _int(e.get("maxThreads"), DEFAULT_MAX_THREADS, props)
        for e in root.iter("Executor")
    }
    out = []
    for c in root.iter("Connector"):
        port = _int(c.get("port"), -1, props)
        if port <= 0:
            continue
        most = _int(c.get("maxConnections"), DEFAULT_MAX_CONNECTIONS, props)
        threads = executors.get(c.get("executor", ""), 0) or _int(
            c.get("maxThreads"), DEFAULT_MAX_THREADS, props
        )
        out.append(
            Connector(
                port=port,
                address=_fill(c.get("address", ""), props),
                max_connections=most if most >= 0 else None,
                given=c.get("maxConnections") is not None,
                accept_count=_int(c.get("acceptCount"), DEFAULT_ACCEPT_COUNT, props),
                max_threads=threads,
            )
        )
    return out


def _fill(value: str, props: dict[str, str]) -> str:
    return _PROPERTY.sub(lambda m: props.get(m.group(1), m.group(0)), value)


def _int(value: str | None, default: int, props: dict[str, str]) -> int:
    got = text.to_int(_fill(value, props) if value is not None else None)
    return default if got is None else got


def read(found: Found, roots: Roots) -> AppLimit:
    args = text.words(found.main.cmdline)
    path = server_xml(args)
    connectors = parse_connectors(text.host_file(roots, path), properties(args))
    c = next((c for c in connectors if c.port == found.port), None)
    value = c.max_connections if c else DEFAULT_MAX_CONNECTIONS
    source: Source = "config" if c is not None and c.given else "default"
    own = text.own_fds(roots, found.main.pid, found.established)  # its jars, logs, listeners
    return AppLimit(
        server=NAME,
        pid=found.main.pid,
        listen=f"{found.host}:{found.port}",
        setting="maxConnections",
        value=value,
        source=source,
        source_detail=f'{path}: <Connector port="{found.port}">'
        if c
        else f"{path}: no Connector on this port; Tomcat's default",
        capacity=value,
        in_use=found.established,
        arithmetic=_arithmetic(value, c),
        symptom="clients wait unanswered in the listen queue (acceptCount), then their "
        "handshakes are dropped: connect timeouts",
        raise_=f'maxConnections="{2 * (value or DEFAULT_MAX_CONNECTIONS)}" on the Connector '
        "(and the JVM's LimitNOFILE), then restart",
        check="http",
        nofile_needed=value + own if value else None,
        nofile=found.main.nofile,
        nofile_offset=own,
    )


def _arithmetic(value: int | None, c: Connector | None) -> str:
    queue = c.accept_count if c else DEFAULT_ACCEPT_COUNT
    threads = c.max_threads if c else DEFAULT_MAX_THREADS
    if value is None:
        return "maxConnections -1: no cap of its own (RLIMIT_NOFILE binds)"
    return (
        f"maxConnections {value}: connections held, idle keep-alive ones included, counted "
        f"before accept() (LimitLatch); then acceptCount {queue} wait unanswered; "
        f"maxThreads {threads} bounds the requests processed at once"
    )
