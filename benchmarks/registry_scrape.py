"""An exporter scrape with the registry's servers listening, on a host holding
100,000 connections: this code against a reference tree (the code before PHP-FPM,
Tomcat, Postfix, Unbound and Squid joined the registry, or any commit) in the same
run.

One command:  python benchmarks/registry_scrape.py [--connections 100000] [--runs 5]
                                                   [--reference efce318]

In a private network namespace made here (deleted at the end): a probe holds N
connections to its sink, and one of each server below listens with a small
configuration in a temporary folder: nginx, redis-server, memcached, mosquitto,
HAProxy, pgbouncer, Apache httpd (event), gunicorn, uvicorn, PHP-FPM, Tomcat,
Postfix, Unbound and Squid (those installed; the rest are named and skipped). Each
scrape reads every listener, asks each known server's module for its limit (read
again every 30 s at most: the median is the steady state) and walks the N client
sockets. The reference tree is `git archive REF src` run with PYTHONPATH; the
reference's registry does not know the five new servers, so it reads them as
unknown listeners. Printed: the median of --runs scrapes for each and the ratio
this code / reference. Needs root. Not a test.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import proxy_scale as ps

ROOT = ps.ROOT
SYSTEM_PYTHON = "/usr/bin/python3"
APPS = ROOT / "tests" / "servers"
TOMCAT = Path("/usr/share/tomcat10")

#: name -> (the binary that must exist, the files to write, the command), with {dir}
#: and {port} filled in
Files = dict[str, str]
SERVERS: dict[str, tuple[str, Files, list[str]]] = {
    "nginx": ("nginx", {"nginx.conf": "worker_processes 1; user root; pid {dir}/n.pid; "
              "error_log {dir}/e.log; events {{ worker_connections 512; }} http {{ "
              "access_log off; server {{ listen 127.0.0.1:{port}; return 200; }} }}"},
              ["nginx", "-p", "{dir}", "-c", "{dir}/nginx.conf", "-g", "daemon off;"]),
    "redis": ("redis-server", {}, ["redis-server", "--port", "{port}", "--bind", "127.0.0.1",
              "--maxclients", "100", "--save", "", "--appendonly", "no"]),
    "memcached": ("memcached", {}, ["memcached", "-u", "root", "-l", "127.0.0.1", "-p",
                  "{port}", "-c", "100"]),
    "mosquitto": ("mosquitto", {"m.conf": "listener {port} 127.0.0.1\nmax_connections 50\n"
                  "allow_anonymous true\n"}, ["mosquitto", "-c", "{dir}/m.conf"]),
    "haproxy": ("haproxy", {"h.cfg": "global\n  maxconn 200\ndefaults\n  mode tcp\n"
                "  timeout client 1m\n  timeout server 1m\n  timeout connect 1s\n"
                "frontend f\n  bind 127.0.0.1:{port}\n  maxconn 100\n  default_backend b\n"
                "backend b\n  server s 127.0.0.1:9\n"}, ["haproxy", "-f", "{dir}/h.cfg"]),
    "pgbouncer": ("pgbouncer", {"p.ini": "[databases]\n* = host=127.0.0.1 port=9\n"
                  "[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n"
                  "auth_type = any\nmax_client_conn = 50\nunix_socket_dir =\n"},
                  ["pgbouncer", "-u", "nobody", "{dir}/p.ini"]),
    "apache": ("apache2", {"a.conf": "ServerRoot {dir}\nServerName localhost\n"
               "DefaultRuntimeDir {dir}\nPidFile {dir}/a.pid\nErrorLog {dir}/e.log\n"
               "User www-data\nGroup www-data\nListen 127.0.0.1:{port}\nLoadModule "
               "mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so\n"
               "LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so\n"},
               ["apache2", "-f", "{dir}/a.conf", "-DFOREGROUND"]),
    "gunicorn": ("gunicorn", {}, [SYSTEM_PYTHON, "/usr/bin/gunicorn", "--chdir", str(APPS),
                 "-b", "127.0.0.1:{port}", "-k", "gthread", "--threads", "2",
                 "web_apps:wsgi"]),
    "uvicorn": (SYSTEM_PYTHON, {}, [SYSTEM_PYTHON, "-m", "uvicorn", "--app-dir", str(APPS),
                "--port", "{port}", "--limit-concurrency", "20", "web_apps:asgi"]),
    "php-fpm": ("php-fpm", {"f.conf": "[global]\npid = {dir}/f.pid\nerror_log = {dir}/e.log\n"
                "[app]\nlisten = 127.0.0.1:{port}\npm = static\npm.max_children = 3\n"},
                ["php-fpm", "-y", "{dir}/f.conf", "-R", "-F"]),
    "unbound": ("unbound", {"u.conf": "server:\n  interface: 127.0.0.1@{port}\n"
                "  do-daemonize: no\n  chroot: \"\"\n  username: \"\"\n"
                "  pidfile: \"{dir}/u.pid\"\n  use-syslog: no\nremote-control:\n"
                "  control-enable: no\n"}, ["unbound", "-d", "-c", "{dir}/u.conf"]),
    "squid": ("squid", {"s.conf": "http_port 127.0.0.1:{port}\nmax_filedescriptors 1024\n"
              "pid_filename {dir}/s.pid\ncache_log {dir}/c.log\naccess_log none\n"
              "http_access allow localhost\nshutdown_lifetime 1 second\n"},
              ["squid", "-N", "-f", "{dir}/s.conf"]),
}  # fmt: skip


def php_fpm() -> str:
    return next(iter(sorted(glob.glob("/usr/sbin/php-fpm*"))), "")


def listening(port: int) -> bool:
    return f":{port} " in ps.sh(*ps.in_ns("ss", "-Htln"))


@contextmanager
def started(name: str, d: Path) -> Iterator[bool]:
    """One server in the namespace, from SERVERS; False when it is not installed."""
    binary, files, cmd = SERVERS[name]
    if name == "php-fpm":
        binary = cmd[0] = php_fpm()
    if not binary or shutil.which(binary) is None:
        yield False
        return
    port = ps.free_port()
    for file, body in files.items():
        (d / file).write_text(body.format(dir=d, port=port))
    argv = [a.format(dir=d, port=port) for a in cmd]
    proc = subprocess.Popen(ps.in_ns(*argv), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not listening(port) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        yield listening(port)
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(15)


@contextmanager
def every_server(stack: ExitStack) -> Iterator[list[str]]:
    with tempfile.TemporaryDirectory(prefix="tcpcbench-servers-") as top:
        os.chmod(top, 0o777)
        up = []
        for name in SERVERS:
            d = Path(top) / name
            d.mkdir()
            os.chmod(d, 0o777)
            if stack.enter_context(started(name, d)):
                up.append(name)
        up += tomcat(stack, Path(top))
        yield up


def tomcat(stack: ExitStack, top: Path) -> list[str]:
    if not (TOMCAT / "bin").is_dir() or shutil.which("java") is None:
        return []
    port, base = ps.free_port(), top / "tomcat"
    for sub in ("conf", "logs", "work", "temp", "webapps"):
        (base / sub).mkdir(parents=True)
    for name in ("web.xml", "logging.properties", "catalina.properties", "context.xml"):
        shutil.copy(f"/etc/tomcat10/{name}", base / "conf" / name)
    (base / "conf" / "server.xml").write_text(
        f'<Server port="-1"><Service name="C"><Connector port="{port}" address="127.0.0.1" '
        'maxConnections="50"/><Engine name="C" defaultHost="h"><Host name="h" '
        'appBase="webapps"/></Engine></Service></Server>'
    )
    jars = ":".join(str(TOMCAT / "bin" / j) for j in ("bootstrap.jar", "tomcat-juli.jar"))
    argv = ["java", "-Xmx128m", f"-Dcatalina.home={TOMCAT}", f"-Dcatalina.base={base}",
            "-cp", jars, "org.apache.catalina.startup.Bootstrap", "start"]  # fmt: skip
    proc = subprocess.Popen(ps.in_ns(*argv), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    stack.callback(proc.wait, 30)
    stack.callback(os.killpg, proc.pid, 15)
    deadline = time.monotonic() + 60
    while not listening(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    return ["tomcat"] if listening(port) else []


def run(args: argparse.Namespace, measure: Callable[[Path, int], float]) -> None:
    with ExitStack() as stack:
        sinks = stack.enter_context(ps.held(args.connections))
        up = stack.enter_context(every_server(stack))
        ref = stack.enter_context(ps.reference(args.reference))
        left = [n for n in [*SERVERS, "tomcat"] if n not in up]
        print(f"{ps.sockets_in_ns():,} sockets in the namespace ({len(sinks)} sinks); "
              f"listening: {', '.join(up)}" + (f"; not installed: {', '.join(left)}"
                                               if left else ""))  # fmt: skip
        old, new = measure(ref, args.runs), measure(ROOT / "src", args.runs)
    print(f"{'':16} {'reference':>10} {'this code':>10} {'ratio':>6}")
    print(f"{'exporter scrape':16} {old:>9.3f}s {new:>9.3f}s {new / old:>5.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--reference", default="efce318")
    args = ap.parse_args()
    subprocess.run(["ip", "netns", "add", ps.NS], check=True)
    try:
        subprocess.run(ps.in_ns("ip", "link", "set", "lo", "up"), check=True)
        run(args, ps.scrapes)
    finally:
        subprocess.run(["ip", "netns", "del", ps.NS], check=False)


if __name__ == "__main__":
    main()
