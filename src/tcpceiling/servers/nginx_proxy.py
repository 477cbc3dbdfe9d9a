"""nginx as a reverse proxy: where each listener sends its clients, read from the
configuration nginx itself prints (`nginx -T`: the main file, then every included file
after a "# configuration file PATH:" line).

What is read, and where nginx defines it:
- the `*_pass` of a location (proxy_pass, grpc_pass, uwsgi_pass, fastcgi_pass,
  scgi_pass; ngx_http_proxy_module.c and its siblings) and stream's proxy_pass
  (ngx_stream_proxy_module.c): an `upstream {}` block by name, else an address whose
  name is resolved as nginx resolves it at start, every address a peer
  (ngx_parse_url, src/core/ngx_inet.c);
- an upstream's `server ADDR [weight=N] [max_conns=N]` lines and `keepalive N`
  (ngx_http_upstream_keepalive_module.c), which keeps connections only with
  `proxy_http_version 1.1` and the Connection header cleared;
- `proxy_bind ADDR [transparent]` or `proxy_bind $var` over `split_clients` or `map`
  values. nginx sets IP_BIND_ADDRESS_NO_PORT before that bind()
  (ngx_event_connect_peer, src/event/ngx_event_connect.c), so each (source, upstream
  address, port) has its own ports.

Each client proxied costs a worker two connections, its own and the upstream's
(ngx_http_upstream_connect -> ngx_event_connect_peer -> ngx_get_connection).
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from tcpceiling.servers import text
from tcpceiling.servers.model import Upstream, UpstreamServer

PASSES = ("proxy_pass", "grpc_pass", "uwsgi_pass", "fastcgi_pass", "scgi_pass")
DEFAULT_PORTS = {"http": 80, "https": 443, "grpc": 80, "grpcs": 443, "uwsgi": 80, "suwsgi": 443}
_FILE_HEAD = re.compile(r"^# configuration file (?P<path>.+?):\s*$", re.MULTILINE)
_TOKEN = re.compile(
    r"""\s+|#[^\n]*|"((?:\\.|[^"\\])*)"|'((?:\\.|[^'\\])*)'|([{};])|([^\s{};"'#]+)"""
)

Resolver = Callable[[str, int], list[str]]


@dataclass
class Block:
    """A directive: its name, its arguments, and the directives of its block."""

    name: str
    args: list[str]
    body: list[Block] | None = None

    def children(self, name: str) -> Iterator[Block]:
        return (b for b in self.body or () if b.name == name)

    def first(self, name: str) -> Block | None:
        return next(self.children(name), None)


def split_files(dump: str) -> dict[str, str]:
    """`nginx -T` output as {path: text}, in the order printed (the main file first)."""
    heads = list(_FILE_HEAD.finditer(dump))
    if not heads:
        return {"": dump}
    ends = [h.start() for h in heads[1:]] + [len(dump)]
    return {h["path"]: dump[h.end() : end] for h, end in zip(heads, ends, strict=True)}


def tokens(conf: str) -> Iterator[str]:
    for m in _TOKEN.finditer(conf):
        quoted = m.group(1) if m.group(1) is not None else m.group(2)
        if quoted is not None:
            yield quoted
        elif m.group(3) or m.group(4):
            yield m.group(3) or m.group(4)


def parse(conf: str, include: Callable[[str], list[str]] | None = None) -> Block:
    """The directive tree of one file, `include`s replaced by the files they name."""
    root = Block("", [], [])
    stack, words = [root], list[str]()
    for tok in tokens(conf):
        if tok == "{":
            blk = Block(words[0] if words else "", words[1:], [])
            _add(stack[-1], blk)
            stack.append(blk)
            words = []
        elif tok == "}":
            if len(stack) > 1:
                stack.pop()
            words = []
        elif tok == ";":
            if words and words[0] == "include" and include is not None and len(words) > 1:
                for part in include(words[1]):
                    for b in parse(part, include).body or ():
                        _add(stack[-1], b)
            elif words:
                _add(stack[-1], Block(words[0], words[1:]))
            words = []
        else:
            words.append(tok)
    return root


def _add(parent: Block, b: Block) -> None:
    assert parent.body is not None
    parent.body.append(b)


def tree(dump: str, prefix: str = "/etc/nginx") -> Block:
    """The whole configuration from `nginx -T`, includes expanded as nginx globs them
    (a relative pattern is relative to the configuration's prefix)."""
    files = split_files(dump)
    main = next(iter(files.values()))

    def include(pattern: str) -> list[str]:
        full = pattern if pattern.startswith("/") else posixpath.join(prefix, pattern)
        return [files[p] for p in sorted(files) if fnmatch.fnmatchcase(p, full)]

    return parse(main, include)


@dataclass(frozen=True)
class Target:
    """A *_pass argument: an upstream name or an address, with its default port."""

    host: str
    port: int | None
    scheme: str = ""


def parse_target(arg: str) -> Target | None:
    """`http://app`, `http://10.0.0.5:8080/x`, `127.0.0.1:9000`, `unix:/run/x` (None:
    no TCP port), `$var` (None: chosen per request)."""
    if "$" in arg or arg.startswith("unix:"):
        return None
    scheme, sep, rest = arg.partition("://")
    if not sep:
        scheme, rest = "", arg
    hostport = rest.split("/", 1)[0]
    if hostport.startswith("unix:"):
        return None
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        port = text.to_int(tail[1:]) if tail.startswith(":") else None
    else:
        host, colon, p = hostport.rpartition(":")
        host, port = (host, text.to_int(p)) if colon else (hostport, None)
    return Target(host, port, scheme)


@dataclass(frozen=True)
class Location:
    """Where a listener's requests go: the pass directive and what inherits into it."""

    directive: str
    target: str
    bind: tuple[str, ...] | None = ()  # None: transparent (each client's own address)
    http11: bool = False
    clears_connection: bool = False
    stream: bool = False


@dataclass
class Listener:
    port: int
    locations: list[Location] = field(default_factory=list)


def listen_port(args: list[str]) -> int | None:
    if not args or args[0].startswith("unix:"):
        return None
    addr = args[0]
    if addr.isdigit():
        return int(addr)
    return text.to_int(addr.rpartition(":")[2]) if ":" in addr else (80 if addr else None)


def _values(http: Block, var: str) -> tuple[str, ...]:
    """The values a `split_clients` or `map` block gives $var (its addresses)."""
    out: list[str] = []
    for kind in ("split_clients", "map"):
        for b in http.children(kind):
            if len(b.args) >= 2 and b.args[1] == var:
                out += [c.args[0] for c in b.body or () if c.args and c.name != "default"]
                out += [c.args[0] for c in b.body or () if c.name == "default" and c.args]
    return tuple(dict.fromkeys(v for v in out if v and not v.startswith("$") and v != "off"))


def _bind(blocks: list[Block], http: Block) -> tuple[str, ...] | None:
    """The innermost proxy_bind: a fixed address, the values of a variable, or none;
    None for `transparent` (the client's own address: its ports, not the proxy's)."""
    for b in reversed(blocks):
        d = b.first("proxy_bind")
        if d is not None and d.args:
            arg = d.args[0]
            if arg == "off":
                return ()
            if "transparent" in d.args[1:]:
                return None
            return _values(http, arg) if arg.startswith("$") else (arg,)
    return ()


def _inherited(blocks: list[Block], name: str) -> list[str] | None:
    for b in reversed(blocks):
        for d in b.children(name):
            return d.args
    return None


def _clears_connection(blocks: list[Block]) -> bool:
    """proxy_set_header Connection "" in the innermost level that sets headers (nginx
    inherits proxy_set_header only when a level sets none of its own)."""
    for b in reversed(blocks):
        headers = list(b.children("proxy_set_header"))
        if headers:
            return any(len(h.args) >= 2 and h.args[0].lower() == "connection" and h.args[1] == ""
                       for h in headers)  # fmt: skip
    return False


def _location(chain: list[Block], http: Block, stream: bool) -> Location | None:
    here = chain[-1]
    for name in PASSES:
        d = here.first(name)
        if d is not None and d.args:
            version = _inherited(chain, "proxy_http_version")
            return Location(
                directive=f"{name} {d.args[0]}",
                target=d.args[0],
                bind=_bind(chain, http),
                http11=version is not None and version[:1] == ["1.1"],
                clears_connection=_clears_connection(chain),
                stream=stream,
            )
    return None


def _locations(chain: list[Block], http: Block) -> Iterator[tuple[str, Location]]:
    """(location path, where it passes) for every location under the last block."""
    for loc in chain[-1].children("location"):
        found = _location([*chain, loc], http, stream=False)
        if found is not None:
            yield (loc.args[-1] if loc.args else "", found)
        yield from _locations([*chain, loc], http)


def listeners(root: Block) -> dict[int, Listener]:
    """Every port a server block listens on, with where its requests go: location `/`
    first (the catch-all a client's request meets), then the others."""
    out: dict[int, Listener] = {}
    for http in root.children("http"):
        for srv in http.children("server"):
            found = sorted(_locations([http, srv], http), key=lambda p: p[0] != "/")
            _register(out, srv, [loc for _path, loc in found])
    for stream in root.children("stream"):
        for srv in stream.children("server"):
            loc = _location([stream, srv], stream, stream=True)
            _register(out, srv, [loc] if loc else [])
    return out


def _register(out: dict[int, Listener], srv: Block, locs: list[Location]) -> None:
    """The server block's locations under each port it listens on (once per port:
    `listen 80` and `listen [::]:80` are one port for a client's request)."""
    ports = {listen_port(lst.args) for lst in srv.children("listen")}
    for port in sorted(p for p in ports if p is not None):
        out.setdefault(port, Listener(port)).locations.extend(locs)


def _server_line(args: list[str], port: int, resolver: Resolver) -> list[UpstreamServer]:
    target = parse_target(args[0]) if args else None
    if target is None or "resolve" in args:
        return []
    opts = dict(a.split("=", 1) for a in args[1:] if "=" in a)
    hosts = resolver(target.host, target.port or port)
    return [
        UpstreamServer(
            h, target.port or port, text.to_int(opts.get("weight")) or 1,
            text.to_int(opts.get("max_conns")) or None,
        )
        for h in hosts
    ]  # fmt: skip


def upstream_for(root: Block, loc: Location, resolver: Resolver = text.resolve) -> Upstream | None:
    """The upstream a location passes to: its `upstream {}` block, else its address."""
    target = parse_target(loc.target)
    if target is None or loc.bind is None:
        return None  # chosen per request, or transparent: not the proxy's own ports
    default = DEFAULT_PORTS.get(target.scheme, 80)
    blocks = [u for c in root.children("stream" if loc.stream else "http")
              for u in c.children("upstream")]  # fmt: skip
    block = next((u for u in blocks if u.args and u.args[0] == target.host), None)
    if block is not None and target.port is None:
        servers = [s for line in block.children("server")
                   for s in _server_line(line.args, default, resolver)]  # fmt: skip
        ka = block.first("keepalive")
        keepalive = text.to_int(ka.args[0]) if ka and ka.args else 0
    else:
        port = target.port or default
        servers = [UpstreamServer(h, port) for h in resolver(target.host, port)]
        keepalive = 0
    if loc.stream or (
        loc.directive.startswith("proxy_pass") and not (loc.http11 and loc.clears_connection)
    ):
        keepalive = 0  # HTTP/1.0 to the upstream, or Connection: close: closed each time
    bound = tuple(UpstreamServer(s.host, s.port, s.weight, s.max_conns, loc.bind) for s in servers)
    return Upstream(
        name=target.host if block is not None else f"{target.host}:{target.port or default}",
        servers=bound,
        keepalive=keepalive or 0,
        directive=loc.directive,
        sources_from="split" if len(loc.bind) > 1 else "",
    )
