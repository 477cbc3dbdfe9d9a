"""A reverse proxy is a server and a client at once: real nginx and HAProxy from Debian
in a namespace of their own, the client in another joined by veth (so the client's
own ports never bind), an upstream that holds each request open. In each test an
independent count: the upstream's own count of requests it holds, a plain client,
`ss` in the proxy's namespace, the proxy's own log or stats socket."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests import proxy_hosts as ph
from tests.conftest import IS_ROOT, cli_json, constraint, probe, run_cli
from tests.test_observe_live import prometheus_scraping, query, wait_for
from tests.test_servers import haproxy_stats, needs

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="needs root: network namespaces")
UPSTREAM = ("127.0.0.2", 8080)
UPSTREAM_AT = "127.0.0.2:8080"
LISTEN = f"{ph.PROXY_IP}:{ph.LISTEN_PORT}"
PROXY_PASS = f"proxy_pass http://{UPSTREAM_AT};"
NARROW = "60000 60099"  # 100 ports toward the upstream


def analyzed(ns: str) -> dict[str, Any]:
    """analyze's server scenario for the proxy's listener, read inside its namespace."""
    out = cli_json("analyze", "--role", "server", "--listen", LISTEN, "--netns", ns)
    return dict(out["scenarios"][0])


def within(predicted: float, served: float, share: float = 0.02) -> bool:
    return abs(predicted - served) <= max(1.0, share * served)


def probe_proxy(h: ph.Hosts, target: int) -> dict[str, Any]:
    code, r = probe("--netns", h.client, "--connect", LISTEN, "--check", "http",
                    "--target", str(target))  # fmt: skip
    assert code == 1, r["stop"]
    return r


@contextmanager
def nginx_proxy(
    location: str = PROXY_PASS, connections: int = 1024, port_range: str | None = NARROW,
    http: str = "", whole: bool = False,
) -> Iterator[tuple[ph.Hosts, ph.Upstream, Path]]:  # fmt: skip
    """nginx in the proxy namespace (one worker) in front of the holding upstream."""
    with ph.two_hosts() as h, tempfile.TemporaryDirectory(prefix="tcx-nginx-") as d:
        if port_range:
            ph.sysctl(h.proxy, "net.ipv4.ip_local_port_range", port_range)
        with ph.upstream(h.proxy, UPSTREAM, whole=whole) as up:
            cmd = ph.nginx_conf(Path(d), connections, location, http=http)
            with ph.server(h.proxy, cmd):
                yield h, up, Path(d)


def settled(up: ph.Upstream, n: int) -> int:
    """The upstream's own count once it reaches `n`, or once it has moved and then
    stood still for a second (bounded: 10 s)."""
    last, still, deadline = up.holding, 0.0, time.monotonic() + 10
    while time.monotonic() < deadline and up.holding < n:
        time.sleep(0.2)
        still = still + 0.2 if up.holding == last else 0.0
        if up.holding and still >= 1.0:
            break
        last = up.holding
    return up.holding


def per_source(ns: str, sources: tuple[str, ...], total: int) -> dict[str, int]:
    """ss's count toward the upstream from each source, read again (every 0.2 s, at
    most 5 s) until the counts add up to what the upstream holds or stand still: a
    handshake the upstream has counted may not read established on nginx's side yet."""
    last: dict[str, int] = {}
    for _ in range(25):
        now = {src: ph.ss_count(ns, UPSTREAM_AT, src=src) for src in sources}
        if sum(now.values()) >= total or now == last:
            return now
        last = now
        time.sleep(0.2)
    return last


@needs("nginx")
def test_nginx_spends_two_worker_connections_per_proxied_client() -> None:
    """worker_connections 200, one worker: 200 - 1 listener - 1 channel = 198
    connections, two per proxied client (its own and the upstream's): 99. Nothing is
    drained: a proxied request's connections are not idle keep-alive ones. analyze
    said 186 before it knew (as for a server answering itself)."""
    with nginx_proxy(connections=200, port_range=None) as (h, up, d):
        limit = constraint(s := analyzed(h.proxy), "app_limit")
        r = probe_proxy(h, 300)
        held_by_upstream = up.most
        complaints = ph.error_lines(d / "error.log", "worker_connections are not enough")
    assert s["binding"] == "app_limit" and limit["ceiling"] == 99
    assert within(limit["ceiling"], r["served"]), (limit["ceiling"], r["served"])
    assert held_by_upstream == r["served"]  # what the upstream itself held at once
    stop = r["stop"]
    assert stop["side"] == "server" and f"toward {UPSTREAM_AT}" in stop["detail"]
    assert 'nginx said: "' in stop["detail"] and complaints > 0  # its own words, its log


@needs("nginx")
def test_a_plain_client_holds_what_analyze_says_through_nginx() -> None:
    """The same 99, counted by a client that opens one request at a time."""
    with nginx_proxy(connections=200, port_range=None) as (h, _up, _d):
        predicted = constraint(analyzed(h.proxy), "app_limit")["ceiling"]
        plain = ph.hold_plain(h.client, ph.PROXY_IP, ph.LISTEN_PORT, 130)
    assert plain == predicted == 99


@needs("nginx")
def test_nginx_out_of_ports_toward_its_upstream() -> None:
    """100 ports in the proxy's ip_local_port_range: nginx serves 100 and answers the
    rest 502, logging connect()'s EADDRNOTAVAIL. analyze said 958 before it knew
    (worker_connections 1024 alone)."""
    with nginx_proxy() as (h, up, d):
        s = analyzed(h.proxy)
        r = probe_proxy(h, 300)
        held_by_upstream = up.most
        logged = ph.error_lines(d / "error.log", "(99: Cannot assign requested address)")
    ports = constraint(s, "upstream_ports")
    assert s["binding"] == "upstream_ports" and ports["ceiling"] == 100
    assert within(ports["ceiling"], r["served"]) and held_by_upstream == r["served"]
    stop = r["stop"]
    assert (stop["reason"], stop["side"]) == ("upstream_ports", "proxy")
    assert UPSTREAM_AT in stop["detail"] and "(99: Cannot assign requested address)" in stop[
        "detail"
    ]
    assert r["replies"] and all(k.startswith("HTTP/1.1 502") for k in r["replies"])
    assert stop["evidence"]["upstream"]["used"] == stop["evidence"]["upstream"]["allowed"] == 100
    assert logged > 0


SPLIT = 'split_clients "$remote_addr$remote_port" $src { 50% 127.0.0.3; * 127.0.0.4; }'


@needs("nginx")
def test_proxy_bind_over_two_addresses_doubles_the_ports() -> None:
    """proxy_bind $src over split_clients with two addresses: nginx binds each with
    IP_BIND_ADDRESS_NO_PORT, so each (source, upstream) has its 100 ports: 200.
    split_clients hashes each client's port, so a source's share of n clients is
    binomial: of 230, one source drew under 100 in 4 % of runs (a fresh clone's CI
    caught 97); of 320, in 1 of 10^11."""
    with nginx_proxy(f"{PROXY_PASS} proxy_bind $src;", http=SPLIT) as (h, up, _d):
        s = analyzed(h.proxy)
        with held(h, 320, 6):
            plain = settled(up, 200)
            by_source = per_source(h.proxy, ("127.0.0.3", "127.0.0.4"), plain)
        time.sleep(1.5)  # tcp_tw_reuse 2 (loopback): nginx's TIME_WAITs reusable after 1 s
        up.most = 0
        r = probe_proxy(h, 400)
        held_by_upstream = up.most
    ports = constraint(s, "upstream_ports")
    assert ports["ceiling"] == 200 and within(200, r["served"]), r["served"]
    assert held_by_upstream == r["served"]
    stop = r["stop"]
    assert (stop["reason"], stop["side"]) == ("upstream_ports", "proxy")
    assert f"{UPSTREAM_AT} 200 of 200 ports" in stop["detail"] and "(99: " in stop["detail"]
    assert [row["sources"] for row in ports["details"]["servers"]] == [["127.0.0.3", "127.0.0.4"]]
    assert plain == 200 and by_source == {"127.0.0.3": 100, "127.0.0.4": 100}, by_source


HAPROXY = """
global
  maxconn 2000
  stats socket {dir}/stats.sock mode 600 level user
defaults
  mode http
  timeout connect 5s
  timeout client 1h
  timeout server 1h
frontend fe
  bind {listen}
  default_backend be
backend be
  server app {upstream} source 127.0.0.3:61000-61099
"""


@needs("haproxy")
def test_haproxy_source_with_its_own_port_range() -> None:
    """`source 127.0.0.3:61000-61099` on the server line: HAProxy hands out those 100
    ports itself (the kernel's range does not apply), then answers 503 and counts
    a connection error (econ) for each."""
    with ph.two_hosts() as h, tempfile.TemporaryDirectory(prefix="tcx-haproxy-") as d:
        conf = Path(d) / "haproxy.cfg"
        conf.write_text(HAPROXY.format(dir=d, listen=LISTEN, upstream=UPSTREAM_AT))
        with ph.upstream(h.proxy, UPSTREAM) as up, \
                ph.server(h.proxy, ["haproxy", "-db", "-f", str(conf)]):  # fmt: skip
            s = analyzed(h.proxy)
            r = probe_proxy(h, 300)
            stats = haproxy_stats(Path(d) / "stats.sock")
            held_by_upstream = up.most
    ports = constraint(s, "upstream_ports")
    assert ports["ceiling"] == 100 and "own range 61000-61099" in ports["note"]
    assert within(100, r["served"]) and held_by_upstream == r["served"]
    assert int(stats[("be", "app")]["smax"]) == r["served"]  # HAProxy's own count
    econ = int(stats[("be", "app")]["econ"])
    stop = r["stop"]
    assert econ > 0 and (stop["reason"], stop["side"]) == ("upstream_ports", "proxy")
    assert f"{UPSTREAM_AT} 100 of 100 ports" in stop["detail"]
    said = re.search(r"app econ (\d+)", stop["detail"])  # HAProxy's count when it stopped
    assert said is not None and 0 < int(said[1]) <= econ
    assert all(k.startswith("HTTP/1.1 503") for k in r["replies"])


@contextmanager
def held(h: ph.Hosts, n: int, seconds: float = 20) -> Iterator[None]:
    """A plain client holding `n` proxied requests in the background."""
    t = threading.Thread(target=ph.hold_plain, args=(h.client, ph.PROXY_IP, ph.LISTEN_PORT,
                                                     n, seconds))  # fmt: skip
    t.start()
    try:
        yield
    finally:
        t.join()


@needs("nginx")
def test_doctor_names_the_proxy_its_listener_and_the_upstream() -> None:
    """97 of the 100 ports toward the upstream held (97 %): doctor, in the proxy's
    namespace, exits 2 and names nginx's process, the listener whose clients pay,
    the upstream, and the fix in nginx's words."""
    with nginx_proxy() as (h, up, _d), held(h, 97, 8):
        assert settled(up, 97) == 97
        in_ss = ph.ss_count(h.proxy, UPSTREAM_AT)
        code, out, _err = run_cli("doctor", "--netns", h.proxy, "--interval", "0.2")
    first = out.splitlines()[0]
    assert code == 2 and in_ss == 97, (code, first)
    assert first.startswith("TCPCEILING CRITICAL - upstream_ports: nginx (pid ")
    assert f"{LISTEN} -> {UPSTREAM_AT}" in first and "97 of 100 ports" in first
    assert "keepalive" in out and "proxy_bind" in out  # the fix in nginx's words


@needs("nginx")
@needs("prometheus")
def test_prometheus_scrapes_the_per_upstream_series() -> None:
    """A real Prometheus scraping the exporter run for the proxy's namespace: the
    per-upstream series equal `ss` in that namespace, and the allowed is 100."""
    with nginx_proxy() as (h, up, _d), held(h, 60, 40):
        assert settled(up, 60) == 60
        with prometheus_scraping("--netns", h.proxy) as base:
            got = wait_for(
                lambda: query(base, f'tcpceiling_upstream_ports_in_use{{address="{UPSTREAM_AT}"}}'),
                60, "Prometheus to scrape the exporter",
            )  # fmt: skip
            limit = query(base, "tcpceiling_upstream_ports_limit")
            in_ss = ph.ss_count(h.proxy, UPSTREAM_AT)
    labels = got[0]["metric"]
    assert (labels["server"], labels["listen"]) == ("nginx", LISTEN)
    assert labels["upstream"] == UPSTREAM_AT
    assert float(got[0]["value"][1]) == in_ss == 60
    assert float(limit[0]["value"][1]) == 100


def tuned(ns: str, target: int) -> dict[str, Any]:
    """tune's plan (exit 1: settings alone do not reach it, the server's own
    configuration must change too: a requirement)."""
    code, out, err = run_cli("tune", "--role", "server", "--listen", LISTEN, "--netns", ns,
                             "--target", str(target), "--json")  # fmt: skip
    assert code in (0, 1), err
    return dict(json.loads(out)["plan"])


@needs("nginx")
def test_tune_raises_what_the_probe_serves_as_planned() -> None:
    """worker_connections 200 and 100 ports: 99 served. tune for 250 asks for the
    range that gives the goal's ports and for worker_connections in nginx's
    arithmetic (two per proxied client); applied in the namespace and nginx's
    configuration, the probe serves what analyze then says, at least the target."""
    with ph.two_hosts() as h, tempfile.TemporaryDirectory(prefix="tcx-nginx-") as d:
        ph.sysctl(h.proxy, "net.ipv4.ip_local_port_range", NARROW)
        with ph.upstream(h.proxy, UPSTREAM) as up:
            with ph.server(h.proxy, ph.nginx_conf(Path(d), 200, PROXY_PASS)):
                plan = tuned(h.proxy, 250)
            changes = {c["key"]: c["value"] for c in plan["changes"]}
            need = next(q["text"] for q in plan["requirements"] if q["limit"] == "app_limit")
            found = re.search(r"worker_connections ([\d,]+) in its", need)
            assert found is not None, need
            wc = int(found[1].replace(",", ""))
            for key, value in changes.items():
                ph.sysctl(h.proxy, key, value)
            with ph.server(h.proxy, ph.nginx_conf(Path(d), wc, PROXY_PASS)):
                s = analyzed(h.proxy)
                r = probe_proxy(h, 400)
                held_by_upstream = up.most
    assert set(changes) == {"net.ipv4.ip_local_port_range"}
    assert plan["goal"] <= s["ceiling"], s["summary"]
    assert within(s["ceiling"], r["served"]), (wc, r["served"], r["outcomes"], r["stop"])
    assert r["served"] >= 250 and held_by_upstream == r["served"]


@needs("nginx")
def test_rate_through_nginx_without_upstream_keepalive() -> None:
    """No keepalive toward the upstream: nginx closes each upstream connection once
    the response is whole, and the port stays in TIME_WAIT 60 s. 30 ports and
    tcp_tw_reuse 0 in the proxy's namespace: 0.5 requests/s long-run; `rate`
    measures it over 64 s (the first 30, then the next 30 a TIME_WAIT period later),
    and `ss` counts the 30 TIME_WAITs on the proxy's side."""
    with nginx_proxy(port_range="60000 60029", whole=True) as (h, _up, _d):
        ph.sysctl(h.proxy, "net.ipv4.tcp_tw_reuse", "0")
        s = analyzed(h.proxy)
        r = rate(h, "max", 64)
        waiting = ph.ss_count(h.proxy, UPSTREAM_AT, "time-wait")
    tw = constraint(s, "upstream_time_wait")
    assert tw["ceiling"] == 0.5 and s["rate_binding"] == "upstream_time_wait"
    assert r["sustained_from"] == "measured"
    assert within(tw["ceiling"], r["sustained_per_s"], 0.20), r["sustained_per_s"]
    assert waiting == 30


KEEPALIVE_LOCATION = (
    'proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";'
)
KEEPALIVE_UPSTREAM = f"upstream app {{ server {UPSTREAM_AT}; keepalive 16; }}"


@needs("nginx")
def test_rate_with_upstream_keepalive_is_not_bound_by_time_wait() -> None:
    """keepalive 16 with HTTP/1.1 and Connection cleared: the same 30 ports carry
    200 requests/s for 10 s (2,000 requests, 66 times the ports)."""
    with nginx_proxy(KEEPALIVE_LOCATION, port_range="60000 60029", whole=True,
                     http=KEEPALIVE_UPSTREAM) as (h, _u, _d):  # fmt: skip
        ph.sysctl(h.proxy, "net.ipv4.tcp_tw_reuse", "0")
        s = analyzed(h.proxy)
        r = rate(h, "200", 10)
    tw = constraint(s, "upstream_time_wait")
    assert tw["ceiling"] is None and "keepalive 16" in tw["note"]
    assert r["stop"]["reason"] == "target" and r["completed"] >= 1900


def rate(h: ph.Hosts, asked: str, seconds: float) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "tcpceiling", "rate", "--netns", h.client, "--connect", LISTEN,
         "--check", "http", "--close", "rst", "--rate", asked, "--workers", "1",
         "--duration", str(seconds), "--json"],
        capture_output=True, text=True, timeout=seconds + 120,
    )  # fmt: skip
    assert done.stdout, done.stderr
    return dict(json.loads(done.stdout))


def test_the_probe_says_where_to_look_for_a_remote_proxy() -> None:
    """A gateway reply from a proxy that is not on this host: the command to run there."""
    from tcpceiling.analysis.model import Endpoint
    from tcpceiling.probe.serving.upstream import remote_note

    note = remote_note("HTTP/1.1 502 Bad Gateway", Endpoint("192.0.2.7", 80))
    assert note is not None and "tcpceiling doctor" in note and "192.0.2.7:80" in note
    assert remote_note("HTTP/1.1 200 OK", Endpoint("192.0.2.7", 80)) is None
    busy = remote_note("HTTP/1.1 503 Service Unavailable", Endpoint("192.0.2.7", 80))
    assert busy is not None and "or a server past a cap of its own" in busy
    assert "past a cap of its own" not in note



#: A proxy the registry does not know: it listens, and holds N connections toward the
#: upstream (as any proxy does for its clients); prints "ready" once they are open.
UNKNOWN_PROXY = r"""
import socket, sys, time
n = int(sys.argv[1])
ln = socket.socket(); ln.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ln.bind(("198.18.8.1", 8000)); ln.listen(64)
out = [socket.create_connection(("127.0.0.2", 8080)) for _ in range(n)]
print("ready", flush=True)
sys.stdin.readline()
"""


@contextmanager
def unknown_proxy(ns: str, n: int) -> Iterator[int]:
    p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", UNKNOWN_PROXY, str(n)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        yield p.pid
    finally:
        p.terminate()
        p.wait(10)


def test_any_proxy_is_named_with_the_ports_it_holds_and_listens_on() -> None:
    """A process the registry does not know that listens on :8000 and holds 97 of the
    100 ports toward 127.0.0.2:8080: doctor names it (its comm and pid, as ss -p would)
    and says it listens, so its clients pay."""
    with ph.two_hosts() as h:
        ph.sysctl(h.proxy, "net.ipv4.ip_local_port_range", NARROW)
        with ph.upstream(h.proxy, UPSTREAM), unknown_proxy(h.proxy, 97):
            in_ss = ph.ss_count(h.proxy, UPSTREAM_AT)
            owners = subprocess.run(
                ["ip", "netns", "exec", h.proxy, "ss", "-Htnp", "state", "established",
                 f"dst {UPSTREAM_AT}"], capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            code, out, _err = run_cli("doctor", "--netns", h.proxy, "--interval", "0.2")
            pid = int(re.findall(r"pid=(\d+)", owners)[0])  # ss -p: the independent owner
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
    first = out.splitlines()[0]
    assert code == 2 and in_ss == 97
    assert first.startswith(f"TCPCEILING CRITICAL - ports: 127.0.0.1 -> {UPSTREAM_AT} ")
    assert f"held by {comm} (pid {pid}), a proxy: it listens on :8000" in first
    assert "97 of 100 ports" in first
