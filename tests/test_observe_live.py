"""doctor, watch and the exporter on real parts: nginx held at its fd limit by the
probe, a real Prometheus from Debian scraping the exporter, a client namespace out
of ports, and TIME_WAIT overflowing under churn."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import PROBE, netns_sysctl, run_cli
from tests.test_servers import free_port, needs, running

NGINX_CONF = """
worker_processes 1;
worker_rlimit_nofile {nofile};
user root;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  keepalive_timeout 120s;
  server {{ listen 127.0.0.1:{port}; location / {{ return 200 "ok\\n"; }} }}
}}
"""
NOFILE = 300
TCPCEILING = [sys.executable, "-m", "tcpceiling"]


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_for(check: Any, seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            got = check()
        except OSError:  # not up yet: refused, or Prometheus' 503 while it starts
            got = None
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"not within {seconds} s: {what}")


@pytest.fixture(scope="module")
def nginx_at_its_fd_limit() -> Iterator[tuple[int, int]]:
    """nginx, one worker with worker_rlimit_nofile 300, held at that limit by a probe
    asking for 400 connections: (its port, the worker's pid)."""
    if not os.access("/usr/sbin/nginx", os.X_OK) and not any(
        os.access(os.path.join(d, "nginx"), os.X_OK) for d in os.environ["PATH"].split(":")
    ):
        pytest.skip("needs nginx (`.ci/run` installs it)")
    with tempfile.TemporaryDirectory(prefix="tcx-nginx-") as tmp:
        port, conf = free_port(), Path(tmp) / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=tmp, port=port, nofile=NOFILE))
        cmd = ["nginx", "-p", tmp, "-c", str(conf), "-g", "daemon off;"]
        with running(cmd, port) as master:
            worker = wait_for(lambda: psutil.Process(master).children(), 10, "nginx worker")[0].pid
            held = subprocess.Popen(
                [*PROBE, "--connect", f"127.0.0.1:{port}", "--check", "http", "--target", "400",
                 "--hold", "120", "--json"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                wait_for(lambda: fds(worker) >= NOFILE - 10, 60, "nginx worker near its fd limit")
                yield port, worker
            finally:
                held.send_signal(signal.SIGINT)
                held.wait(60)


def test_doctor_names_nginxs_fd_limit(nginx_at_its_fd_limit: tuple[int, int]) -> None:
    port, worker = nginx_at_its_fd_limit
    code, out, err = run_cli("doctor", "--interval", "1", "--kmsg", "/dev/null", "--json")
    d = json.loads(out)
    assert code == 2 and d["status"] == "critical", (out, err)
    cause = d["cause"]
    assert cause["limit"] == "nofile" and cause["subject"] == f"nginx (pid {worker})"
    assert "tcpceiling tune" in cause["fix"] and f"of {NOFILE} fds" in cause["evidence"][0]
    code, out, _ = run_cli(
        "doctor", "--interval", "0.5", "--kmsg", "/dev/null", "--port", str(port)
    )
    assert out.startswith(f"TCPCEILING CRITICAL - nofile: nginx (pid {worker}):")


def test_watch_shows_nginx_red(nginx_at_its_fd_limit: tuple[int, int]) -> None:
    port, worker = nginx_at_its_fd_limit
    proc = subprocess.run(
        [*TCPCEILING, "watch", "--once", "--interval", "0.3", "--port", str(port)],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "FORCE_COLOR": "1", "COLUMNS": "160"},
    )  # fmt: skip
    line = next(ln for ln in proc.stderr.splitlines() if f"nginx (pid {worker})" in ln)
    assert proc.returncode == 0 and "\x1b[1;31m" in line and "nofile" in line  # bold red


def query(base: str, promql: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as r:
        data = json.load(r)
    assert data["status"] == "success", data
    return list(data["data"]["result"])


@contextmanager
def prometheus_scraping(*scope: str) -> Iterator[str]:
    """The exporter (its scope: --port PORT, --netns NS) scraped every second by a real
    Prometheus loading the shipped rules: yields Prometheus' base URL."""
    eport, pport = free_port(), free_port()
    rules = RULES
    exporter = [*TCPCEILING, "exporter", "--listen", f"127.0.0.1:{eport}", *scope]
    with tempfile.TemporaryDirectory(prefix="tcx-prom-") as tmp:
        cfg = Path(tmp) / "prometheus.yml"
        cfg.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: [{rules}]\n"
            "scrape_configs:\n  - job_name: tcpceiling\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{eport}']}}]\n"
        )
        prom = ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp}/data",
                f"--web.listen-address=127.0.0.1:{pport}"]  # fmt: skip
        with running(exporter, eport), running(prom, pport):
            yield f"http://127.0.0.1:{pport}"


@needs("prometheus")
def test_prometheus_scrapes_the_exporter(nginx_at_its_fd_limit: tuple[int, int]) -> None:
    """A real Prometheus scrapes the exporter every second; its HTTP API returns the
    nginx worker's open fds within 5 of /proc/PID/fd, and loads the shipped rules."""
    port, worker = nginx_at_its_fd_limit
    with prometheus_scraping("--port", str(port)) as base:
        got = wait_for(
            lambda: query(base, f'tcpceiling_process_open_fds{{pid="{worker}"}}'), 60,
            "Prometheus to scrape the exporter",
        )  # fmt: skip
        now = fds(worker)
        value = float(got[0]["value"][1])
        assert got[0]["metric"]["comm"] == "nginx" and abs(value - now) <= 5, (value, now)
        limit = query(base, f'tcpceiling_process_max_fds{{pid="{worker}"}}')
        assert float(limit[0]["value"][1]) == NOFILE
        with urllib.request.urlopen(f"{base}/api/v1/rules", timeout=5) as r:
            groups = json.load(r)["data"]["groups"]
        shipped = RULES.read_text().count("- alert:")  # every rule the file ships loaded
        assert len(groups[0]["rules"]) == shipped >= 15 and all(g["file"] for g in groups)


RULES = Path(__file__).parent.parent / "deploy" / "prometheus" / "tcpceiling-alerts.yml"
OWN_CAP_CONF = """
worker_processes 1;
user root;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
  access_log off;
  keepalive_timeout 120s;
  server {{ listen 127.0.0.1:{port}; location / {{ return 200 "ok\\n"; }} }}
}}
"""
#: 1 worker x (64 - 1 listener - 1 channel - 64/16 kept free): tcpceiling.servers.nginx
OWN_CAP = 58


@pytest.fixture(scope="module")
def nginx_at_its_own_cap() -> Iterator[tuple[int, int]]:
    """nginx with worker_connections 64 (58 served at once) and its error log at warn
    (where it says "worker_connections are not enough"), flooded by a probe asking
    for 120: its own cap binds, far from any kernel limit. (its port, the master)"""
    if shutil.which("nginx") is None:
        pytest.skip("needs nginx (`.ci/run` installs it)")
    with tempfile.TemporaryDirectory(prefix="tcx-nginx-") as tmp:
        port, conf = free_port(), Path(tmp) / "nginx.conf"
        conf.write_text(OWN_CAP_CONF.format(dir=tmp, port=port))
        cmd = ["nginx", "-p", tmp, "-c", str(conf), "-g", "daemon off;"]
        with running(cmd, port) as master:
            held = subprocess.Popen(
                [*PROBE, "--connect", f"127.0.0.1:{port}", "--check", "http", "--target",
                 "120", "--hold", "120", "--json"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                # at its cap and staying there: after nginx's first eviction the probe
                # adds one connection at a time to find the top of nginx's waves
                wait_for(lambda: held_at(port, OWN_CAP - 1), 60, "nginx held at its cap")
                log = Path(tmp) / "error.log"
                wait_for(lambda: "not enough" in log.read_text(), 60, "nginx to say so")
                yield port, master
            finally:
                held.send_signal(signal.SIGINT)
                held.wait(60)


def held_at(port: int, count: int) -> bool:
    """`count` or more established on the server's side, twice, a second apart."""
    if established(port) < count:
        return False
    time.sleep(1)
    return established(port) >= count


def established(port: int) -> int:
    """ESTABLISHED on the server's side of `port`, counted by ss (not by tcpceiling)."""
    out = subprocess.run(
        ["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return len(out.splitlines())


def test_doctor_names_a_server_at_its_own_cap(nginx_at_its_own_cap: tuple[int, int]) -> None:
    """The server's setting, not a kernel limit: doctor exits 2 naming nginx, its
    worker_connections, nginx's own words (its error log), and the config line."""
    port, master = nginx_at_its_own_cap
    code, out, err = run_cli(
        "doctor", "--interval", "0.5", "--kmsg", "/dev/null", "--port", str(port), "--json"
    )
    d = json.loads(out)
    assert code == 2 and d["status"] == "critical", (out, err)
    cause = d["cause"]
    assert cause["limit"] == "app_limit", cause
    assert f"nginx (pid {master})" in cause["subject"]
    assert "worker_connections 64" in cause["subject"]
    assert f"of {OWN_CAP} conns" in cause["evidence"][0]
    assert "64 worker_connections are not enough" in cause["evidence"][1]
    assert "worker_connections 128" in cause["fix"] and "reusing connections" in cause["fix"]


def test_watch_shows_a_server_at_its_own_cap_red(nginx_at_its_own_cap: tuple[int, int]) -> None:
    port, master = nginx_at_its_own_cap
    proc = subprocess.run(
        [*TCPCEILING, "watch", "--once", "--interval", "0.3", "--port", str(port)],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "FORCE_COLOR": "1", "COLUMNS": "200"},
    )  # fmt: skip
    line = next(ln for ln in proc.stderr.splitlines() if "app_limit" in ln)
    assert proc.returncode == 0 and "\x1b[1;31m" in line and f"pid {master}" in line


@needs("prometheus")
def test_prometheus_scrapes_a_servers_own_cap(nginx_at_its_own_cap: tuple[int, int]) -> None:
    """A real Prometheus: the server's connections (against ss's count) and its cap."""
    port, master = nginx_at_its_own_cap
    with prometheus_scraping("--port", str(port)) as base:
        key = f'{{server="nginx",pid="{master}"}}'
        got = wait_for(lambda: query(base, f"tcpceiling_app_connections{key}"), 60, "a scrape")
        assert abs(float(got[0]["value"][1]) - established(port)) <= 2
        cap = query(base, f"tcpceiling_app_connections_limit{key}")
        assert float(cap[0]["value"][1]) == OWN_CAP
        assert cap[0]["metric"]["setting"] == "worker_connections"


def test_doctor_names_ports_toward_a_destination(netns: str) -> None:
    """A client in a namespace with 100 ports holding 95 connections to one server."""
    netns_sysctl(netns, "net.ipv4.ip_local_port_range", "60000 60099")
    server = (
        "import socket,sys,time\n"
        "s=socket.socket(); s.bind(('127.0.0.1',7000)); s.listen(256)\n"
        "print('ready',flush=True)\n"
        "held=[]\n"
        "while True: held.append(s.accept()[0])\n"
    )
    client = (
        "import socket,time\n"
        "c=[socket.create_connection(('127.0.0.1',7000)) for _ in range(95)]\n"
        "print('ready',flush=True); time.sleep(120)\n"
    )
    inside = ["ip", "netns", "exec", netns, sys.executable, "-c"]
    procs = []
    try:
        for program in (server, client):
            p = subprocess.Popen([*inside, program], stdout=subprocess.PIPE, text=True)
            procs.append(p)
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        code, out, err = run_cli(
            "doctor", "--netns", netns, "--interval", "0.5", "--kmsg", "/dev/null", "--json"
        )
    finally:
        for p in procs:
            p.kill()
            p.wait()
    d = json.loads(out)
    cause = d["cause"]
    assert code == 2 and cause["limit"] == "ports", (out, err)  # 95 % is --crit
    assert (
        cause["subject"].startswith("127.0.0.1 -> 127.0.0.1:7000")
        and "95 of 100 ports" in cause["evidence"][0]
    )
    assert "tcpceiling tune --role client --connect 127.0.0.1:7000" in cause["fix"]


def test_doctor_names_time_wait_overflow_from_the_counter(netns: str) -> None:
    """tcp_max_tw_buckets 10 in a namespace, and a churn that closes from the client:
    past 10 the kernel drops TIME_WAIT entries and counts TCPTimeWaitOverflow."""
    netns_sysctl(netns, "net.ipv4.tcp_max_tw_buckets", "10")
    churn = subprocess.Popen(
        [*TCPCEILING, "rate", "--netns", netns, "--duration", "8", "--rate", "500", "--json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(2)
        code, out, err = run_cli(
            "doctor", "--netns", netns, "--interval", "2", "--kmsg", "/dev/null", "--json"
        )
    finally:
        churn.wait(60)
    d = json.loads(out)
    tw = next(f for f in d["findings"] if f["limit"] == "time_wait")
    assert code == 2 and tw["severity"] == "critical", (out, err)
    assert any("TCPTimeWaitOverflow" in e for e in tw["evidence"])


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["doctor", "--warn", "0.9", "--crit", "0.5"], 3),
        (["doctor", "--netns", "tcx-no-such-ns"], 3),
        (["doctor", "--warn", "2"], 3),
        (["exporter", "--textfile", "/nonexistent-tcpceiling/metrics.prom"], 2),
        (["exporter", "--listen", "nowhere"], 2),
        (["watch", "--once", "--netns", "tcx-no-such-ns"], 2),
    ],
)
def test_bad_observe_input_is_one_line(args: list[str], code: int) -> None:
    got, _out, err = run_cli(*args)
    assert got == code and len(err.strip().splitlines()) == 1, err


def test_exporter_port_in_use_is_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        got, _out, err = run_cli("exporter", "--listen", f"127.0.0.1:{s.getsockname()[1]}")
    assert got == 2 and "in use" in err and len(err.strip().splitlines()) == 1
    # the serving path blocks SIGINT/SIGTERM for sigwait: a failed start must unblock
    # them, or every process this one starts later inherits them blocked
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    assert signal.SIGINT not in blocked and signal.SIGTERM not in blocked


def test_textfile_for_node_exporter(tmp_path: Path) -> None:
    out = tmp_path / "tcpceiling.prom"
    code, _o, err = run_cli("exporter", "--textfile", str(out))
    assert code == 0, err
    text = out.read_text()
    assert "# TYPE tcpceiling_ceiling_connections gauge" in text
    assert [p.name for p in tmp_path.iterdir()] == ["tcpceiling.prom"]  # no temp file left


@pytest.mark.parametrize("tree", ["this-machine", "container-v2", "stock-distro"])
def test_observe_reads_fixture_trees(tree: str, tmp_path: Path) -> None:
    """Everything reads through Roots: a fixture tree's sockets.json gives its ports
    per destination, and its processes (none that hold sockets) are not the host's."""
    base = Path(__file__).parent / "fixtures" / tree
    where = ["--procfs", str(base / "proc"), "--sysfs", str(base / "sys")]
    out = tmp_path / "m.prom"
    code, _o, err = run_cli("exporter", *where, "--textfile", str(out))
    assert code == 0, err
    text = out.read_text()
    entries = json.loads((base / "sockets.json").read_text())
    listening = {e["sport"] for e in entries if e["state"] == "LISTEN"}
    assert all(f'port="{p}"' in text for p in listening)
    assert "tcpceiling_process_open_fds{" not in text


@needs("redis-server")
def test_doctor_names_redis_at_maxclients_with_its_own_count() -> None:
    """redis with maxclients 20, asked for 30 by a probe that then holds what it got:
    doctor exits 2 naming redis's maxclients as it runs. At its cap redis refuses
    doctor's own CONFIG GET, and its title no longer shows --maxclients (redis rewrites
    it to "redis-server HOST:PORT"): the refusal is the server saying so, and its
    clients then are its cap."""
    port = free_port()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--maxclients", "20",
           "--save", "", "--appendonly", "no"]  # fmt: skip
    with running(cmd, port) as pid:
        held = subprocess.Popen(
            [*PROBE, "--connect", f"127.0.0.1:{port}", "--check", "redis", "--target", "30",
             "--hold", "60", "--json"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for(lambda: established(port) >= 20, 60, "20 held by redis")
            code, out, err = run_cli(
                "doctor", "--interval", "0.5", "--kmsg", "/dev/null", "--port", str(port), "--json"
            )
        finally:
            held.send_signal(signal.SIGINT)
            held.wait(60)
    d = json.loads(out)
    assert code == 2 and d["status"] == "critical", (out, err)
    cause = d["cause"]
    assert cause["limit"] == "app_limit" and f"redis (pid {pid})" in cause["subject"]
    assert "maxclients 20" in cause["subject"] and "[server]" in cause["subject"]
    assert "max number of clients reached" in cause["evidence"][1]
    assert "maxclients" in cause["fix"]


SYN_FLOOD = """
import select, socket, sys, time
port = int(sys.argv[1])
ls = socket.socket(); ls.bind(("127.0.0.1", port)); ls.listen(8)  # never accepts
print("ready", flush=True)
sys.stdin.readline()  # go
socks = []
for _ in range(60):
    s = socket.socket(); s.setblocking(False); s.connect_ex(("127.0.0.1", port)); socks.append(s)
time.sleep(3)
"""


@pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft (`.ci/run` installs it)")
def test_doctor_names_the_syn_queue(netns: str) -> None:
    """A listener (backlog 8) that never accepts, syncookies off, and the clients'
    final ACKs dropped by a rule in the test's namespace, so every handshake stays
    half-open in the SYN queue: past 8 the kernel drops SYNs and counts
    TCPReqQFullDrop (tcp_conn_request, net/ipv4/tcp_input.c). doctor names it."""
    netns_sysctl(netns, "net.ipv4.tcp_syncookies", "0")
    port = free_port()
    rule = (
        "table inet t {\n chain out {\n  type filter hook output priority filter;\n"
        f"  tcp dport {port} tcp flags & (syn | ack) == ack drop\n }}\n}}\n"
    )
    subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=rule, text=True,
                   check=True)  # fmt: skip
    flood = subprocess.Popen(
        ["ip", "netns", "exec", netns, sys.executable, "-c", SYN_FLOOD, str(port)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert flood.stdout is not None and flood.stdout.readline().strip() == "ready"
        doctor = subprocess.Popen(
            [*TCPCEILING, "doctor", "--netns", netns, "--interval", "2", "--kmsg", "/dev/null",
             "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(0.5)
        assert flood.stdin is not None
        flood.stdin.write("go\n")
        flood.stdin.flush()
        out, err = doctor.communicate(timeout=60)
    finally:
        flood.kill()
        flood.wait(10)
    d = json.loads(out)
    syn = next(f for f in d["findings"] if f["limit"] == "syn_queue")
    assert doctor.returncode == 2 and syn["severity"] == "critical", (out, err)
    assert any("TCPReqQFullDrop" in e for e in syn["evidence"])
