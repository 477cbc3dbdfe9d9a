"""The PHP-FPM, Postfix, Squid, Tomcat and Unbound readers and the FastCGI and DNS
checks, on literal text and bytes: pure functions, no server."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tcpceiling.errors import InputError
from tcpceiling.host.roots import Roots
from tcpceiling.probe.serving import checks, dns, fastcgi
from tcpceiling.servers import phpfpm, postfix, squid, text, tomcat, unbound

FPM = """\
; php-fpm.conf
[global]
pid = /run/php/php8.2-fpm.pid
error_log = /var/log/php8.2-fpm.log
include=/etc/php/8.2/fpm/pool.d/*.conf

[www]
listen = /run/php/$pool.sock
pm = dynamic
pm.max_children = 5

[api]
listen = 127.0.0.1:9001   ; the API's pool
pm = static
pm.max_children = "12"
listen.backlog = 128
[all]
listen = 9002
pm.max_children = 3
"""


def test_php_fpm_pools_from_its_ini() -> None:
    conf = phpfpm.parse_ini(FPM)
    assert conf["global"]["include"] == "/etc/php/8.2/fpm/pool.d/*.conf"
    pools = {x.name: x for x in phpfpm.pools(conf)}
    assert pools["www"].listen == "/run/php/www.sock" and pools["www"].pm == "dynamic"
    assert (pools["api"].max_children, pools["api"].backlog, pools["api"].pm) == (12, 128, "static")
    assert pools["all"].pm == "dynamic" and pools["all"].backlog == phpfpm.DEFAULT_BACKLOG


@pytest.mark.parametrize(
    ("listen", "host", "port", "ok"),
    [
        ("127.0.0.1:9001", "127.0.0.1", 9001, True),
        ("127.0.0.1:9001", "127.0.0.2", 9001, False),
        ("9002", "10.0.0.1", 9002, True),
        ("[::1]:9003", "::1", 9003, True),
        ("0.0.0.0:9004", "127.0.0.1", 9004, True),
        ("/run/php/www.sock", "127.0.0.1", 9000, False),
        ("127.0.0.1:9001", "127.0.0.1", 9000, False),
    ],
)
def test_php_fpm_listen_forms(listen: str, host: str, port: int, ok: bool) -> None:
    assert phpfpm.listens_on(listen, host, port) is ok


@pytest.mark.parametrize(
    ("cmdline", "exe", "path"),
    [
        (("php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)",), "",
         "/etc/php/8.2/fpm/php-fpm.conf"),
        (("/usr/sbin/php-fpm8.2", "-y", "/srv/fpm.conf", "-F"), "", "/srv/fpm.conf"),
        (("php-fpm",), "/usr/sbin/php-fpm8.2", "/etc/php/8.2/fpm/php-fpm.conf"),
    ],
)  # fmt: skip
def test_php_fpm_finds_its_file(cmdline: tuple[str, ...], exe: str, path: str) -> None:
    assert phpfpm.conf_path(cmdline, exe) == path


def test_php_fpm_is_known_by_name_and_executable() -> None:
    assert phpfpm.matches("php-fpm8.2", "") and phpfpm.matches("x", "/usr/sbin/php-fpm8.2")
    assert not phpfpm.matches("php", "/usr/bin/php8.2")


MASTER_CF = """\
# ==========================================================================
# service type  private unpriv  chroot  wakeup  maxproc command + args
smtp      inet  n       -       y       -       1       postscreen
smtpd     pass  -       -       y       -       -       smtpd
  -o smtpd_sasl_auth_enable=no
submission inet n       -       y       -       25      smtpd
127.0.0.1:10025 inet n  -       n       -       0       smtpd
pickup    unix  n       -       y       60      1       pickup
"""


def test_postfix_master_cf_and_its_process_limits() -> None:
    services = postfix.parse_master(MASTER_CF)
    names = ["smtp", "smtpd", "submission", "127.0.0.1:10025", "pickup"]
    assert [s.name for s in services] == names
    main = postfix.parse_main(
        "default_process_limit = 40\nsmtpd_client_connection_count_limit\n  = 7\n"
    )
    assert main == {"default_process_limit": "40", "smtpd_client_connection_count_limit": "7"}
    assert postfix.maxproc("-", main) == 40 and postfix.maxproc("-", {}) == 100
    assert postfix.maxproc("25", main) == 25 and postfix.maxproc("0", main) is None
    assert postfix.maxproc("1000?", main) == 1000


def test_postfix_serving_service_behind_postscreen() -> None:
    services = postfix.parse_master(MASTER_CF)
    inet, server = postfix.serving(services, 25)
    assert inet is not None and inet.command == "postscreen"
    assert server is not None and (server.kind, server.command) == ("pass", "smtpd")
    inet, server = postfix.serving(services, 587)
    assert inet is server and server is not None and server.maxproc == "25"
    assert postfix.serving(services, 10025)[1] is not None
    assert postfix.serving(services, 2525) == (None, None)


def test_postfix_master_is_told_apart_by_its_executable() -> None:
    assert postfix.matches("master", "/usr/lib/postfix/sbin/master")
    assert not postfix.matches("master", "/usr/bin/some-other-master")


@pytest.mark.parametrize(
    ("max_fd", "reserved", "keep_alive", "accept"),
    [(200, 50, 100, 151), (400, 100, 200, 301), (1000, 100, 800, 901), (1024, 100, 819, 925),
     (65536, 100, 52429, 65437), (16, 4, 8, 13)],
)  # fmt: skip
def test_squid_lines(max_fd: int, reserved: int, keep_alive: int, accept: int) -> None:
    """keep-alive while free >= 2 x RESERVED_FD and free >= in use / 4 (fdUsageHigh);
    accept while free >= RESERVED_FD (okToAccept)."""
    assert squid.reserved(max_fd) == reserved
    line = squid.keep_alive_line(max_fd)
    assert line == keep_alive
    free = max_fd - line
    assert free >= 2 * reserved and free >= line >> 2  # the line holds ...
    free = max_fd - line - 1
    assert free < 2 * reserved or free < (line + 1) >> 2  # ... and one more does not
    assert squid.accept_line(max_fd) == accept


def test_squid_info_page() -> None:
    page = (
        "File descriptor usage for squid:\n"
        "\tMaximum number of file descriptors:    200\n"
        "\tLargest file desc currently in use:     13\n"
        "\tNumber of file desc currently in use:    9\n"
    )
    assert squid.parse_info(page) == (200, 9)
    assert squid.parse_info("HTTP/1.1 403 Forbidden") == (None, None)


SERVER_XML = """<?xml version="1.0"?>
<Server port="8005" shutdown="SHUTDOWN">
  <Service name="Catalina">
    <Executor name="pool" maxThreads="150"/>
    <Connector port="${http.port}" protocol="HTTP/1.1" maxConnections="500"
               acceptCount="50" executor="pool"/>
    <Connector port="8443" protocol="org.apache.coyote.http11.Http11NioProtocol"
               maxThreads="25" maxConnections="-1"/>
    <Connector port="8009" protocol="AJP/1.3" address="::1"/>
  </Service>
</Server>
"""


def test_tomcat_connectors() -> None:
    args = ["java", "-Dhttp.port=8080", "-Dcatalina.base=/srv/tc", tomcat.BOOTSTRAP, "start"]
    assert tomcat.matches_cmdline(tuple(args)) and not tomcat.matches("java", "/usr/bin/java")
    assert tomcat.server_xml(args) == "/srv/tc/conf/server.xml"
    assert tomcat.server_xml([*args, "-config", "/etc/x.xml"]) == "/etc/x.xml"
    cs = {c.port: c for c in tomcat.parse_connectors(SERVER_XML, tomcat.properties(args))}
    assert (cs[8080].max_connections, cs[8080].accept_count, cs[8080].max_threads) == (500, 50, 150)
    assert cs[8443].max_connections is None and cs[8443].max_threads == 25
    assert (cs[8009].max_connections, cs[8009].given, cs[8009].address) == (8192, False, "::1")
    assert tomcat.parse_connectors("<Server", {}) == []


UNBOUND_CONF = """\
server:
    chroot: ""
    num-threads: 4
    incoming-num-tcp: 100   # per thread
    so-reuseport: no
    include: "/etc/unbound/unbound.conf.d/*.conf"
remote-control:
    control-enable: yes
forward-zone:
    name: "."
    forward-addr: 192.0.2.1
"""


def test_unbound_server_clause() -> None:
    values, includes = unbound.parse_conf(UNBOUND_CONF)
    assert includes == ["/etc/unbound/unbound.conf.d/*.conf"]
    s = unbound.settings(values)
    assert (s.threads, s.incoming_tcp, s.reuseport, s.given) == (4, 100, False, True)
    assert s.idle_ms == unbound.DEFAULT_IDLE_MS and "name" not in values
    d = unbound.settings({})
    assert (d.threads, d.incoming_tcp, d.reuseport, d.given) == (1, 10, True, False)


def fcgi(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBHHBx", 1, kind, 1, len(body), 0) + body


@pytest.mark.parametrize(
    ("data", "outcome", "text"),
    [
        (b"", "more", ""),
        (fcgi(6, b"Content-type: text/plain\r\n\r\npong")[:12], "more", ""),
        (fcgi(6, b"Status: 404 Not Found\r\n\r\nFile not found."), "ok", ""),
        (fcgi(7, b"Primary script unknown"), "ok", ""),
        (fcgi(3, b"\0\0\0\0\0\0\0\0"), "ok", ""),
        (fcgi(3, b"\0\0\0\0\x02\0\0\0"), "error", "FCGI_OVERLOADED"),
        (b"HTTP/1.1 400 Bad Request\r\n", "error", "not FastCGI (version byte 72)"),
    ],
)
def test_fastcgi_replies(data: bytes, outcome: str, text: str) -> None:
    v = fastcgi.fastcgi_reply(data)
    assert (v.outcome, v.text) == (outcome, text)


def test_fastcgi_request_records() -> None:
    req = fastcgi.fastcgi_request("/status")
    version, kind, rid, length, _ = struct.unpack_from(">BBHHBx", req)
    assert (version, kind, rid, length) == (1, 1, 1, 8)
    assert req[8:11] == b"\x00\x01\x01"  # the responder role, FCGI_KEEP_CONN
    assert b"\x0f\x07SCRIPT_FILENAME/status" in req
    assert req.endswith(fcgi(4, b"") + fcgi(5, b""))
    long = fastcgi.fastcgi_params((("X", "v" * 200),))
    assert long[:5] == b"\x01\x80\x00\x00\xc8"  # a value of 200 bytes: four length bytes


def dns_msg(ident: int, flags: int, body: bytes = b"") -> bytes:
    msg = struct.pack(">HHHHHH", ident, flags, 1, 1, 0, 0) + body
    return struct.pack(">H", len(msg)) + msg


@pytest.mark.parametrize(
    ("data", "outcome"),
    [
        (b"\x00", "more"),
        (dns_msg(dns.DNS_ID, 0x8180, b"\x09localhost\x00\x00\x01\x00\x01"), "ok"),
        (dns_msg(dns.DNS_ID, 0x8185), "ok"),  # REFUSED is still the server's answer
        (dns_msg(dns.DNS_ID, 0x8180, b"abc")[:-2], "more"),
        (dns_msg(0x1234, 0x8180), "error"),
        (dns_msg(dns.DNS_ID, 0x0100), "error"),  # our own query echoed is no answer
    ],
)
def test_dns_replies(data: bytes, outcome: str) -> None:
    assert dns.dns_reply(data).outcome == outcome


def test_dns_query_wire() -> None:
    q = dns.dns_query("a.test")
    assert q[:2] == struct.pack(">H", len(q) - 2) and q[2:4] == struct.pack(">H", dns.DNS_ID)
    assert q.endswith(b"\x01a\x04test\x00\x00\x01\x00\x01")


@pytest.mark.parametrize(
    ("spec", "canonical", "path"),
    [
        ("http", "http", "/"),
        ("http:/squid-internal-static/icons/SN.png", "http:/squid-internal-static/icons/SN.png",
         "/squid-internal-static/icons/SN.png"),
        ("fastcgi", "fastcgi", "/ping"),
        ("fastcgi:/status", "fastcgi:/status", "/status"),
        ("dns", "dns", "localhost."),
        ("dns:example.org", "dns:example.org", "example.org"),
    ],
)  # fmt: skip
def test_new_check_specs(spec: str, canonical: str, path: str) -> None:
    c = checks.parse(spec)
    assert (c.spec, c.path) == (canonical, path)
    assert c.repeatable


@pytest.mark.parametrize("spec", ["http:nopath", "fastcgi:/a b", "dns:", "dns:a..b"])
def test_bad_check_specs(spec: str) -> None:
    with pytest.raises(InputError):
        checks.parse(spec)


def test_include_globs_are_read_under_a_fixture_tree(tmp_path: Path) -> None:
    """php-fpm's `include` and unbound's `include:` expand under the tree the Roots
    stand for, in name order (a later file's setting wins)."""
    roots = Roots.fixture(tmp_path)
    (tmp_path / "proc").mkdir()
    pool_d = tmp_path / "etc/php/8.2/fpm/pool.d"
    pool_d.mkdir(parents=True)
    (tmp_path / "etc/php/8.2/fpm/php-fpm.conf").write_text(
        "[global]\ninclude=/etc/php/8.2/fpm/pool.d/*.conf\n"
    )
    (pool_d / "a.conf").write_text("[api]\nlisten = 9001\npm.max_children = 4\n")
    (pool_d / "b.conf").write_text("[api]\npm.max_children = 6\n")
    pools = phpfpm.pools(phpfpm.load(roots, "/etc/php/8.2/fpm/php-fpm.conf"))
    assert [(x.name, x.max_children) for x in pools] == [("api", 6)]
    conf_d = tmp_path / "etc/unbound/unbound.conf.d"
    conf_d.mkdir(parents=True)
    (tmp_path / "etc/unbound/unbound.conf").write_text(
        'server:\n  incoming-num-tcp: 20\ninclude: "/etc/unbound/unbound.conf.d/*.conf"\n'
    )
    (conf_d / "threads.conf").write_text("server:\n  num-threads: 3\n")
    s = unbound.settings(unbound.load(roots, "/etc/unbound/unbound.conf"))
    assert (s.threads, s.incoming_tcp) == (3, 20)


@pytest.mark.parametrize(
    ("log", "words", "said"),
    [
        ("a\n x 1 y \nb\nx 2\n", ("x",), "x 2"),
        ("AH00161 one\nnothing\n", ("AH00286", "AH00161"), "AH00161 one"),
        ("nothing here\n", ("x",), ""),
        ("", ("x",), ""),
    ],
)
def test_the_last_line_a_server_said(log: str, words: tuple[str, ...], said: str) -> None:
    assert text.last_line(log, *words) == said
