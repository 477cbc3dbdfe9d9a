"""OpenSSH sshd: `MaxStartups start:rate:full` (default 10:30:100) bounds the
connections that have not yet logged in, which is what a client that only opens
connections holds. Past `start` sshd drops each new one with a probability rising
from rate % to 100 % at `full` (drop_connection, sshd.c: "drop connection #N from
... past MaxStartups"): the number held at once is random between start and full,
exactly `start` when rate is 100 (the form "MaxStartups N"). Unauthenticated
connections also end after LoginGraceTime (default 120 s). The running values come
from `sshd -T` of the running binary with its own -f."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from tcpceiling.host.roots import Roots
from tcpceiling.servers import text
from tcpceiling.servers.model import AppLimit, Found, Source

NAME = "sshd"
DEFAULT = "10:30:100"


@dataclass(frozen=True)
class Startups:
    start: int
    rate: int
    full: int

    @property
    def capacity(self) -> int:
        """Held at once for sure: `start` when past it every one is dropped, else
        `full`, the only hard line."""
        return self.start if self.rate >= 100 else self.full


def matches(comm: str, exe: str) -> bool:
    return comm == "sshd" or exe.endswith("/sshd")


def parse_startups(value: str) -> Startups | None:
    """'10' (start = full, rate 100) or 'start:rate:full'."""
    parts = [text.to_int(p) for p in value.strip().split(":")]
    if len(parts) == 1 and parts[0] is not None:
        return Startups(parts[0], 100, parts[0])
    if len(parts) == 3 and all(p is not None for p in parts):
        start, rate, full = (p or 0 for p in parts)
        return Startups(start, rate, full)
    return None


def _dump(found: Found, roots: Roots) -> tuple[str, Source, str]:
    """`sshd -T` (the effective configuration) of the running binary with its -f;
    else the -f file (default /etc/ssh/sshd_config) as it is."""
    conf = text.flag(found.main.cmdline, "-f") or "/etc/ssh/sshd_config"
    if roots.live and found.main.exe:
        cmd = [found.main.exe, "-T", "-f", conf]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
            if done.returncode == 0:
                return done.stdout, "server", " ".join(cmd)
        except (OSError, subprocess.TimeoutExpired):
            pass
    return text.host_file(roots, conf), "config", conf


def parse_title(title: str) -> int | None:
    """Unauthenticated connections now, from the listener's process title
    ("... [listener] 3 of 10-100 startups", OpenSSH 7.x on)."""
    words = title.split()
    if "startups" in words and "of" in words:
        i = words.index("of")
        return text.to_int(words[i - 1]) if i > 0 else None
    return None


def read(found: Found, roots: Roots) -> AppLimit:
    body, source, detail = _dump(found, roots)
    value = text.key_values(body).get("maxstartups")
    s = parse_startups(value) if value else None
    if s is None:
        s, source, detail = parse_startups(DEFAULT), "default", "sshd default MaxStartups"
    assert s is not None
    shown = f"{s.start}:{s.rate}:{s.full}"
    how = (
        f"every connection past {s.start} not yet logged in is dropped"
        if s.rate >= 100
        else f"past {s.start}, {s.rate} % of new ones dropped, rising to all at {s.full}: "
        f"between {s.start} and {s.full} held at once, at random"
    )
    return AppLimit(
        server=NAME,
        pid=found.main.pid,
        listen=f"{found.host}:{found.port}",
        setting="MaxStartups",
        value=s.capacity,
        source=source,
        source_detail=f"{detail} (MaxStartups {shown})",
        capacity=s.capacity,
        in_use=parse_title(" ".join(found.main.cmdline)) or found.established,
        arithmetic=f"MaxStartups {shown}: {how} (drop_connection, sshd.c)",
        symptom="Exceeded MaxStartups (to the client, then a close; its log: drop connection "
        "#N ... past MaxStartups)",
        raise_=f"MaxStartups {s.start * 2}:{s.rate}:{s.full * 2} in sshd_config, then reload",
        check="expect:^SSH-",
        nofile=found.main.nofile,
    )
