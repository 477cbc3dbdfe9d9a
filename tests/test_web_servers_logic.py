"""Apache httpd, gunicorn and uvicorn: their configuration and arithmetic, as pure
functions on literal text (the live servers are in test_web_servers.py)."""

from __future__ import annotations

import pytest

from tcpceiling.servers import apache, apache_conf, gunicorn, text, uvicorn

DEBIAN_MAIN = """\
# Debian's apache2.conf, in short
DefaultRuntimeDir ${APACHE_RUN_DIR}
Timeout 300
KeepAlive On
IncludeOptional mods-enabled/*.load
IncludeOptional mods-enabled/*.conf
<IfModule !mpm_prefork_module>
    ListenBacklog 1024
</IfModule>
<VirtualHost *:80>
    MaxRequestWorkers 1
</VirtualHost>
ErrorLog ${APACHE_LOG_DIR}/error.log
"""
FILES = {
    "/etc/apache2/apache2.conf": DEBIAN_MAIN,
    "/etc/apache2/mods-enabled/mpm_event.load": (
        "LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so\n"
    ),
    "/etc/apache2/mods-enabled/mpm_event.conf": """\
<IfModule mpm_event_module>
\tStartServers\t\t\t 2
\tThreadsPerChild\t\t 25
\tMaxRequestWorkers\t  150
</IfModule>
<IfModule mpm_worker_module>
\tMaxRequestWorkers 7
</IfModule>
<IfDefine TUNED>
\tAsyncRequestWorkerFactor 3
</IfDefine>
""",
}


def read(path: str) -> str:
    return FILES.get(path, "")


def glob(pattern: str) -> list[str]:
    stem = pattern.split("*")[0]
    ext = pattern.rsplit("*", 1)[-1]
    return sorted(p for p in FILES if p.startswith(stem) and p.endswith(ext))


def evaluated(mpm: str | None, defines: set[str] = set()) -> apache_conf.Context:  # noqa: B006
    env = {"APACHE_RUN_DIR": "/run/apache2", "APACHE_LOG_DIR": "/var/log/apache2"}
    ctx = apache_conf.Context({"core_module"}, set(defines), env, "/etc/apache2", mpm)
    return apache_conf.evaluate("/etc/apache2/apache2.conf", read, glob, ctx)


def test_debian_layout_is_read_as_httpd_reads_it() -> None:
    """Includes in order, ${VAR} from the environment, IfModule on the running MPM,
    nothing from inside a VirtualHost, the last value kept."""
    ctx = evaluated("event")
    values = {k: v for k, (v, _w) in ctx.values.items()}
    assert values == {
        "ListenBacklog": "1024",
        "StartServers": "2",
        "ThreadsPerChild": "25",
        "MaxRequestWorkers": "150",
        "ErrorLog": "/var/log/apache2/error.log",
    }
    assert ctx.values["MaxRequestWorkers"][1] == "/etc/apache2/mods-enabled/mpm_event.conf:4"
    assert "mpm_event_module" in ctx.modules


def test_the_mpm_from_loadmodule_when_the_process_does_not_say() -> None:
    assert evaluated(None).mpm == "event"
    worker = evaluated("worker")  # the running process says worker: its block holds
    assert worker.values["MaxRequestWorkers"][0] == "7"


def test_ifdefine_follows_the_command_lines_defines() -> None:
    assert "AsyncRequestWorkerFactor" not in evaluated("event").values
    assert evaluated("event", {"TUNED"}).values["AsyncRequestWorkerFactor"][0] == "3"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('Define X "a b"\n', [("Define", ("X", "a b"))]),
        ("StartServers \\\n  4\n", [("StartServers", ("4",))]),
        ("  # a comment\n<IfModule mpm_event_module>\n", [("<IfModule", ("mpm_event_module",))]),
        ("</IfModule>\n", [("</IfModule", ())]),
    ],
)
def test_logical_lines(text: str, expected: list[tuple[str, tuple[str, ...]]]) -> None:
    assert [(ln.name, ln.args) for ln in apache_conf.logical_lines(text, "f")] == expected


@pytest.mark.parametrize(
    ("name", "ident"),
    [
        ("event.c", "mpm_event_module"),
        ("mod_mpm_event.c", "mpm_event_module"),
        ("mod_ssl.c", "ssl_module"),
        ("ssl_module", "ssl_module"),
    ],
)
def test_module_names(name: str, ident: str) -> None:
    assert apache_conf.module_ident(name) == ident


def test_start_options_and_environment() -> None:
    argv = ["/usr/sbin/apache2", "-d", "/srv/a", "-f", "x.conf", "-DFOREGROUND", "-D", "SSL"]
    conf, root, defines = apache_conf.start_options([*argv, "-k", "start"])
    assert (conf, root, defines) == ("x.conf", "/srv/a", {"FOREGROUND", "SSL"})
    assert text.parse_environ(b"A=1\0B=x=y\0\0") == {"A": "1", "B": "x=y"}
    maps = "7f00-7f01 r-xp 0 08:01 12 /usr/lib/apache2/modules/mod_mpm_prefork.so\n"
    assert apache_conf.running_mpm(maps) == "prefork" and apache_conf.running_mpm("") is None


@pytest.mark.parametrize(
    ("mpm", "values", "cap"),
    [
        # event: processes x ThreadsPerChild x (1 + factor taken whole)
        ("event", {"ServerLimit": "1", "ThreadsPerChild": "10", "MaxRequestWorkers": "10",
                   "AsyncRequestWorkerFactor": "2"}, 30),
        ("event", {"ThreadsPerChild": "25", "MaxRequestWorkers": "150"}, 450),  # Debian's
        ("event", {"ThreadsPerChild": "10", "MaxRequestWorkers": "25",
                   "AsyncRequestWorkerFactor": "1.5"}, 40),  # 2 processes, factor 1
        ("event", {}, 16 * 25 * 3),  # the compiled-in defaults
        ("event", {"ServerLimit": "2", "ThreadsPerChild": "10", "MaxRequestWorkers": "100"}, 60),
        # worker: MaxRequestWorkers rounded down to whole processes
        ("worker", {"ThreadsPerChild": "10", "MaxRequestWorkers": "25"}, 20),
        ("worker", {"ThreadsPerChild": "80"}, 16 * 64),  # ThreadLimit 64 caps it
        # prefork: MaxRequestWorkers, at most ServerLimit
        ("prefork", {"MaxRequestWorkers": "12"}, 12),
        ("prefork", {"MaxRequestWorkers": "300"}, 256),
    ],
)  # fmt: skip
def test_apache_capacity_follows_its_mpm(mpm: str, values: dict[str, str], cap: int) -> None:
    m = apache.settle(mpm, values)
    assert apache.capacity(m)[0] == cap


def test_apache_reached_line_in_its_error_log() -> None:
    log = (
        "[Fri Dec 04 05:01:02 2026] [mpm_prefork:notice] AH00163: resuming normal operations\n"
        "[Fri Dec 04 05:01:09 2026] [mpm_prefork:error] AH00161: server reached "
        "MaxRequestWorkers setting, consider raising the MaxRequestWorkers setting\n"
    )
    assert "AH00161" in apache.reached(log) and apache.reached("") == ""


@pytest.mark.parametrize(
    ("args", "env", "config", "cls", "cap"),
    [
        (["-k", "gthread", "-w", "2", "--threads", "2", "--worker-connections", "15"], "", {},
         "gthread", 26),
        (["--threads", "4"], "", {}, "gthread", 996),  # sync with threads is gthread
        ([], "--workers 3", {}, "sync", 3),
        ([], "", {"workers": "2", "worker_class": "gevent", "worker_connections": "50"},
         "gevent", 100),
        (["-k", "gunicorn.workers.gthread.ThreadWorker", "--keep-alive", "0", "--threads", "3"],
         "", {}, "gthread", 3),  # no keep-alive: only the threads' requests at once
        (["-k", "uvicorn.workers.UvicornWorker"], "", {}, "uvicorn.workers.UvicornWorker", None),
    ],
)  # fmt: skip
def test_gunicorn_capacity_by_worker_class(
    args: list[str], env: str, config: dict[str, str], cls: str, cap: int | None
) -> None:
    s = gunicorn.settings(["gunicorn", *args, "app:app"], env, config, "gunicorn.conf.py")
    assert s.worker_class == cls
    assert gunicorn.capacity(s, s.workers)[0] == cap


def test_gunicorn_config_file_is_read_never_run() -> None:
    got = gunicorn.assignments("import os\nworkers = 4\nthreads = os.cpu_count()\nbind = 'x'\n")
    assert got == {"workers": "4", "bind": "x"}
    assert gunicorn.assignments("def (:") == {}


@pytest.mark.parametrize(
    ("cmdline", "gu", "uv"),
    [
        (("/usr/bin/python3", "/usr/bin/gunicorn", "app:app"), True, False),
        (("python3", "-m", "gunicorn", "app:app"), True, False),
        (("/usr/bin/python3", "-m", "uvicorn", "app:app"), False, True),
        (("/usr/bin/python3", "/usr/local/bin/uvicorn", "app:app"), False, True),
        (("/usr/bin/python3", "manage.py", "runserver"), False, False),
    ],
)
def test_interpreted_servers_are_known_by_their_command_line(
    cmdline: tuple[str, ...], gu: bool, uv: bool
) -> None:
    assert gunicorn.matches_cmdline(cmdline) is gu
    assert uvicorn.matches_cmdline(cmdline) is uv


def test_uvicorn_limit_from_the_command_line_or_its_environment() -> None:
    s = uvicorn.settings(["uvicorn", "--limit-concurrency", "20", "app:app"], {})
    assert (s.limit_concurrency, s.workers, s.keep_alive, s.where) == (20, 1, 5, "command line")
    e = uvicorn.settings(["uvicorn", "app:app"], {"UVICORN_LIMIT_CONCURRENCY": "8"})
    assert (e.limit_concurrency, e.where) == (8, "config")
    assert uvicorn.settings(["uvicorn", "app:app"], {}).limit_concurrency is None
