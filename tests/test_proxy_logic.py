"""The proxy's arithmetic on literal text: nginx's and HAProxy's configurations as they
print them, the ports toward an upstream, and the probe's attribution (pure)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from tcpceiling.analysis.limits.upstream import ServerPorts, rows_for, server_ports
from tcpceiling.host import parse
from tcpceiling.host.read import NetView
from tcpceiling.host.sockets import SocketTable
from tcpceiling.probe.run.result import Stop
from tcpceiling.probe.serving.upstream import ProxyView, attribute
from tcpceiling.servers import haproxy, nginx, nginx_proxy
from tcpceiling.servers.model import AppLimit, Upstream, UpstreamServer


def fixed(host: str, port: int) -> list[str]:
    """A resolver for literal tests: names resolve to two addresses, addresses to themselves."""
    return ["10.0.0.5", "10.0.0.6"] if host == "app.internal" else [host]


#: `nginx -T` prints the main file, then each included file under its own header.
DUMP = """# configuration file /etc/nginx/nginx.conf:
worker_processes 2;
events { worker_connections 4096; }
http {
    include /etc/nginx/conf.d/*.conf;  # the upstreams and servers
    split_clients "$remote_addr$remote_port" $src { 50% 10.1.0.1; * 10.1.0.2; }
}
stream {
    upstream db { server 10.0.0.9:5432 max_conns=300; }
    server { listen 5432; proxy_pass db; proxy_bind 10.1.0.7; }
}

# configuration file /etc/nginx/conf.d/app.conf:
upstream app {
    server app.internal:8080 weight=3;
    server 10.0.0.7:8080 max_conns=50;
    keepalive 32;
}
server {
    listen 80 default_server;
    listen [::]:80;
    location /static/ { root /srv; }
    location / {
        proxy_pass http://app;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_bind $src;
    }
    location /old/ { proxy_pass http://10.0.0.8; }
}
server {
    listen 127.0.0.1:8081;
    location / { proxy_pass http://app/; }  # HTTP/1.0: the keepalive is never used
}
server { listen 8082; location / { return 200 "ok # not a comment\\n"; } }
"""


def root() -> nginx_proxy.Block:
    return nginx_proxy.tree(DUMP)


def test_the_includes_are_expanded_where_nginx_includes_them() -> None:
    files = nginx_proxy.split_files(DUMP)
    assert list(files) == ["/etc/nginx/nginx.conf", "/etc/nginx/conf.d/app.conf"]
    http = root().first("http")
    assert http is not None and [b.name for b in http.body or []] == [
        "upstream", "server", "server", "server", "split_clients",
    ]  # fmt: skip


def test_each_listener_sends_its_clients_to_location_slash_first() -> None:
    found = nginx_proxy.listeners(root())
    assert sorted(found) == [80, 5432, 8081, 8082] and found[8082].locations == []  # its own
    assert [loc.target for loc in found[80].locations] == ["http://app", "http://10.0.0.8"]
    assert found[5432].locations[0].stream and found[5432].locations[0].bind == ("10.1.0.7",)


def test_an_upstream_block_its_names_resolved_its_caps_and_sources() -> None:
    loc = nginx_proxy.listeners(root())[80].locations[0]
    up = nginx_proxy.upstream_for(root(), loc, fixed)
    assert up is not None and up.name == "app" and up.keepalive == 32
    assert [(s.host, s.port, s.weight, s.max_conns) for s in up.servers] == [
        ("10.0.0.5", 8080, 3, None), ("10.0.0.6", 8080, 3, None), ("10.0.0.7", 8080, 1, 50),
    ]  # fmt: skip
    assert {s.sources for s in up.servers} == {("10.1.0.1", "10.1.0.2")}
    assert up.sources_from == "split"


@pytest.mark.parametrize(
    ("port", "index", "name", "keepalive", "addresses"),
    [
        (80, 1, "10.0.0.8:80", 0, ["10.0.0.8:80"]),  # an address, http's port
        (8081, 0, "app", 0, ["10.0.0.5:8080", "10.0.0.6:8080", "10.0.0.7:8080"]),
        (5432, 0, "db", 0, ["10.0.0.9:5432"]),
    ],
)
def test_upstreams_by_address_without_http11_and_in_stream(
    port: int, index: int, name: str, keepalive: int, addresses: list[str]
) -> None:
    loc = nginx_proxy.listeners(root())[port].locations[index]
    up = nginx_proxy.upstream_for(root(), loc, fixed)
    assert up is not None and (up.name, up.keepalive) == (name, keepalive)
    assert [s.address for s in up.servers] == addresses


@pytest.mark.parametrize(
    ("arg", "target"),
    [
        ("http://10.0.0.5:8080/x", nginx_proxy.Target("10.0.0.5", 8080, "http")),
        ("https://app", nginx_proxy.Target("app", None, "https")),
        ("grpc://[::1]:50051", nginx_proxy.Target("::1", 50051, "grpc")),
        ("127.0.0.1:9000", nginx_proxy.Target("127.0.0.1", 9000, "")),
        ("unix:/run/php.sock", None),
        ("http://unix:/run/app.sock:/", None),
        ("http://$backend", None),
    ],
)
def test_pass_targets(arg: str, target: nginx_proxy.Target | None) -> None:
    assert nginx_proxy.parse_target(arg) == target


def test_quotes_and_comments() -> None:
    toks = list(nginx_proxy.tokens('return 200 "a # b;"; # gone\nx \'y z\';'))
    assert toks == ["return", "200", "a # b;", ";", "x", "y z", ";"]


def test_a_proxying_listener_spends_two_connections_per_client() -> None:
    """(worker_connections - listeners - 1) // 2 per worker, and tune's inverse."""
    limit = AppLimit("nginx", 1, "198.18.8.1:8000", "worker_connections", 200, "server", "",
                     99, 0, "", "", "", "http", per_setting=1, own=2, per_client=2)  # fmt: skip
    assert limit.capacity_at(200) == 99 and limit.capacity_at(1024) == 511
    assert limit.setting_for(99) == 200 and limit.setting_for(250) == 502
    assert limit.setting_for(1_000_000) == 2_000_002


def net(low: int = 60000, high: int = 60099, tw_reuse: int = 2) -> NetView:
    sockstat = parse.parse_sockstat("TCP: inuse 0 orphan 0 tw 0 alloc 0 mem 0\n")
    return NetView((low, high), frozenset(), 4096, tw_reuse, 262144, sockstat, None, None)


def table(**toward: tuple[str, str, int, int, int]) -> SocketTable:
    every: Counter[tuple[str, str, int]] = Counter()
    tw: Counter[tuple[str, str, int]] = Counter()
    for src, dst, port, n, waiting in toward.values():
        every[(src, dst, port)] += n
        tw[(src, dst, port)] += waiting
    return SocketTable(frozenset({8000}), every, tw, "literal")


def ports(up: Upstream, t: SocketTable, tw_reuse: int = 0) -> tuple[list[ServerPorts], int]:
    return rows_for(up, net(tw_reuse=tw_reuse), t)


def test_one_source_per_server_the_kernel_range_each() -> None:
    up = Upstream("app", (UpstreamServer("10.0.0.5", 8080), UpstreamServer("10.0.0.6", 8080)))
    rows, allowed = ports(up, table(a=("10.1.0.1", "10.0.0.5", 8080, 90, 10)))
    assert allowed == 200 and [(r.allowed, r.used, r.time_wait) for r in rows] == [
        (100, 90, 10), (100, 0, 0),
    ]  # fmt: skip


def test_time_wait_is_taken_over_only_where_tcp_tw_reuse_applies() -> None:
    up = Upstream("lo", (UpstreamServer("127.0.0.2", 8080),))
    t = table(a=("127.0.0.1", "127.0.0.2", 8080, 100, 40))
    assert ports(up, t, tw_reuse=2)[0][0].used == 60  # loopback: reused after 1 s
    assert ports(up, t, tw_reuse=0)[0][0].used == 100


def test_sources_multiply_max_conns_caps_and_own_ranges_share_a_pool() -> None:
    two = ("10.1.0.1", "10.1.0.2")
    capped = Upstream("a", (UpstreamServer("10.0.0.5", 80, 1, 150, two),))
    assert ports(capped, table())[1] == 150  # 2 x 100, capped at max_conns 150
    rng = (61000, 61099)
    shared = tuple(UpstreamServer(h, 80, sources=("10.1.0.1",), port_range=rng, range_shared=True)
                   for h in ("10.0.0.5", "10.0.0.6"))  # fmt: skip
    rows, allowed = ports(Upstream("be", shared), table())
    assert [r.allowed for r in rows] == [100, 100] and allowed == 100  # the backend's pool
    assert "own range 61000-61099" in rows[0].how
    apart = tuple(UpstreamServer(h, 80, sources=("10.1.0.1",), port_range=rng)
                  for h in ("10.0.0.5", "10.0.0.6"))  # fmt: skip
    assert ports(Upstream("be", apart), table())[1] == 200  # a server line's own allocator


def test_server_ports_counts_each_source_apart() -> None:
    srv = UpstreamServer("10.0.0.5", 8080, sources=("10.1.0.1", "10.1.0.2"))
    t = table(a=("10.1.0.1", "10.0.0.5", 8080, 100, 0), b=("10.1.0.2", "10.0.0.5", 8080, 7, 0),
              c=("10.1.0.3", "10.0.0.5", 8080, 50, 0))  # fmt: skip
    (row,) = server_ports(Upstream("u", (srv,)), 100, t, tw_reused=False)
    assert (row.allowed, row.used, row.left) == (200, 107, 93)


HAPROXY_CFG = """
global
  stats socket /run/haproxy.sock
defaults
  mode http
  source 10.1.0.9
frontend fe
  bind :80
  default_backend be
frontend raw
  bind :5000
  default_backend tcp_be
backend be
  http-reuse never
  server a app.internal:8080 maxconn 100
  server b 10.0.0.7:8080 source 10.1.0.1:61000-61099
  server c 10.0.0.8:8080 source 0.0.0.0 usesrc clientip
backend tcp_be
  mode tcp
  source 10.1.0.2:1024-65535
  server d 10.0.0.9:5000
"""


def test_haproxy_backend_servers_and_where_their_source_comes_from() -> None:
    sections = haproxy.parse_config(HAPROXY_CFG)
    (up,) = haproxy.upstreams(sections, 80, fixed)
    assert (up.name, up.keepalive) == ("be", 0)  # http-reuse never
    got = [(s.address, s.max_conns, s.sources, s.port_range, s.range_shared) for s in up.servers]
    assert got == [
        ("10.0.0.5:8080", 100, ("10.1.0.9",), None, False),  # defaults' source, no range
        ("10.0.0.6:8080", 100, ("10.1.0.9",), None, False),
        ("10.0.0.7:8080", None, ("10.1.0.1",), (61000, 61099), False),  # its own allocator
    ]  # usesrc clientip: the client's own address, not the proxy's ports
    (tcp,) = haproxy.upstreams(sections, 5000, fixed)
    assert tcp.servers[0].port_range == (1024, 65535) and tcp.servers[0].range_shared
    assert tcp.keepalive == 0


@pytest.mark.parametrize(
    ("words", "parsed"),
    [
        (("10.1.0.1",), ("10.1.0.1", None)),
        (("10.1.0.1:61000-61099",), ("10.1.0.1", (61000, 61099))),
        (("[2001:db8::1]:2000-3000",), ("2001:db8::1", (2000, 3000))),
        (("0.0.0.0", "usesrc", "clientip"), None),
        ((), None),
    ],
)
def test_haproxy_source_words(words: tuple[str, ...], parsed: object) -> None:
    assert haproxy.parse_source(words) == parsed


def test_haproxy_counts_its_connection_errors_per_server() -> None:
    csv = ("# pxname,svname,scur,smax,econ,\nbe,a,100,100,37,\nbe,b,0,0,0,\n"
           "be,BACKEND,100,100,37,\n")  # fmt: skip
    words = haproxy.connect_errors(haproxy.parse_stat(csv), "be")
    assert words == "backend be: connection errors toward its servers (show stat): a econ 37"


def view(used: int, allowed: int, words: str = "") -> ProxyView:
    srv = UpstreamServer("127.0.0.2", 8080)
    up = Upstream("127.0.0.2:8080", (srv,), directive="proxy_pass http://127.0.0.2:8080")
    limit = AppLimit("nginx", 7, "198.18.8.1:8000", "worker_connections", 1024, "server", "",
                     511, 0, "", "", "", "http", upstreams=(up,), upstream_words=words,
                     upstream_ports_gone=nginx.OUT_OF_PORTS in words, per_client=2)  # fmt: skip
    row = ServerPorts(up.name, srv.address, (), allowed, used, 0, "")
    return ProxyView(limit, up, (row,), allowed)


ERRNO_99 = "connect() to 127.0.0.2:8080 failed (99: Cannot assign requested address)"


@pytest.mark.parametrize(
    ("stop", "reply", "after", "reason", "side"),
    [
        (Stop("server_reply", side="server"), "HTTP/1.1 502 Bad Gateway", view(100, 100),
         "upstream_ports", "proxy"),
        (Stop("server_reset", side="server"), "", view(40, 100, ERRNO_99),
         "upstream_ports", "proxy"),
        (Stop("server_reply", side="server"), "HTTP/1.1 502 Bad Gateway", view(40, 100),
         "server_reply", "server"),  # ports to spare, no words: not the ports
        (Stop("server_reply", side="server"), "HTTP/1.1 502 Bad Gateway", None,
         "server_reply", "server"),  # nothing read of the proxy
    ],
)  # fmt: skip
def test_a_gateway_reply_is_the_proxys_ports_only_when_the_evidence_says_so(
    stop: Stop, reply: str, after: ProxyView | None, reason: str, side: str
) -> None:
    got = attribute(stop, reply, after)
    assert (got.reason, got.side) == (reason, side)
    if reason == "upstream_ports":
        assert "127.0.0.2:8080" in got.detail and got.evidence["upstream"]["allowed"] == 100


def test_nginx_fix_in_its_own_words() -> None:
    up = Upstream("127.0.0.2:8080", (UpstreamServer("127.0.0.2", 8080),))
    limit = view(0, 100).limit
    text = nginx.upstream_fix(limit, up)
    assert "keepalive 64" in text and "proxy_http_version 1.1" in text
    assert "proxy_bind $proxy_source" in text and "widen" in text
    assert nginx.split_sources(3, ("a", "b", "c")) == (
        "split_clients $remote_addr$remote_port $proxy_source { 33.33% a; 33.33% b; * c; } "
        "with proxy_bind $proxy_source;"
    )


TRANSPARENT = """# configuration file /etc/nginx/nginx.conf:
http {
  server { listen 80; location / { proxy_pass http://10.0.0.5:8080;
                                   proxy_bind $remote_addr transparent; } }
  server { listen 81; location / { proxy_pass http://$upstream_host; } }
}
"""


@pytest.mark.parametrize("port", [80, 81])
def test_transparent_and_per_request_targets_pass_on_but_count_no_ports(port: int) -> None:
    """proxy_bind transparent connects from each client's own address (its ports, not
    the proxy's); a target in a variable is chosen per request: both still spend two
    connections per client, and neither is counted as the proxy's ports."""
    passes, ups = nginx.proxied(TRANSPARENT, port, "/etc/nginx")
    assert passes and ups == ()


def test_doctor_gives_the_time_wait_rate_without_keepalive() -> None:
    from tcpceiling.observe.sample import UpstreamUse
    from tcpceiling.observe.usage import upstream_usages
    from tests.test_observe import sample

    use = UpstreamUse("nginx", 7, "198.18.8.1:8000", "app", "10.0.0.5:8080", 90, 100, 40, 0,
                      "keepalive")  # fmt: skip
    (row,) = upstream_usages(replace(sample(1), upstreams=(use,)))
    assert row.limit == "upstream_ports" and (row.used, row.capacity) == (90, 100)
    assert "1.7 requests/s through" in row.fix and "198.18.8.1:8000 pay" in row.fix
    assert row.subject == "nginx (pid 7) 198.18.8.1:8000 -> app 10.0.0.5:8080 (40 TIME_WAIT)"
