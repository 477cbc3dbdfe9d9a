"""Each command's --help ends with examples and its exit codes."""

from __future__ import annotations

import click

#: Each command's --help ends with examples and its exit codes.
USAGE: dict[str, tuple[tuple[str, ...], str]] = {
    "analyze": (
        (
            "tcpceiling analyze",
            "tcpceiling analyze --role client --connect 10.0.0.5:5432 --source-ip 10.0.1.0/28",
            "tcpceiling analyze --role server --io-model threads --pid 1234",
            "tcpceiling analyze --role server --set nofile=1048576 --report ceiling.html",
            "tcpceiling analyze --role nat --netns nat --connect 198.18.6.2:9000",
        ),
        "0 predicted, 2 bad input, 3 the host could not be read",
    ),
    "report": (
        ("tcpceiling report before.json after.json -o tune.html",),
        "0 written, 2 bad input (a file that is not a result)",
    ),
    "tune": (
        (
            "tcpceiling tune --role server --target 1000000 --service myapp",
            "tcpceiling tune --role client --connect 10.0.0.5:443 --target 100000 --verify",
            "tcpceiling tune --role server --target 1000000 --apply --root /srv/image",
            "tcpceiling tune --restore",
        ),
        "0 the plan reaches the target, 1 it cannot (or --verify fell short), 2 bad input, "
        "3 the host could not be read",
    ),
    "snapshot": (
        ("tcpceiling snapshot ./host-a", "tcpceiling snapshot --tar host-a.tar.gz"),
        "0 written, 2 bad input (a directory that is not a snapshot), 3 unreadable host",
    ),
    "probe": (
        (
            "tcpceiling probe --target 200000",
            "tcpceiling probe --target max --hold 30 --report proof.html",
            "tcpceiling probe --connect 127.0.0.1:6379 --check redis --target 20000",
            "tcpceiling probe --connect 127.0.0.1:443 --check 'expect:^220 ' --target 500",
        ),
        "0 the target was reached, 1 a limit or a guard stopped it, 2 bad input, "
        "3 the host could not be read",
    ),
    "compare-io": (
        ("tcpceiling compare-io --connections 10000 --report io.html",),
        "0 compared, 1 a run stopped short, 2 bad input, 3 the host could not be read",
    ),
    "rate": (
        (
            "tcpceiling rate",
            "tcpceiling rate --rate 20000 --duration 10 --close server",
            "tcpceiling rate --connect 127.0.0.1:80 --check http --close server",
        ),
        "0 the asked rate was held, 1 a limit stopped it (or --rate max), 2 bad input, "
        "3 the host could not be read",
    ),
    "serve": (
        ("tcpceiling serve --listen 0.0.0.0:9000 --shards 4",),
        "0 stopped (Ctrl-C or --duration), 2 bad input",
    ),
    "tour": (
        ("tcpceiling tour", "tcpceiling tour --json --report tour.html"),
        "0 every proof agreed with its prediction, 1 one did not, 3 not root or the host "
        "could not be read",
    ),
    "watch": (
        ("tcpceiling watch", "tcpceiling watch --port 443 --warn 0.7", "tcpceiling watch --once"),
        "0 left with q or Ctrl-C, 2 bad input, 3 the host could not be read",
    ),
    "trace": (
        ("tcpceiling trace", "tcpceiling trace 10 --json"),
        "0 no failure seen, 1 failures seen, 2 bad input, 3 no tracefs or not root, "
        "130 interrupted (the instance is removed)",
    ),
    "doctor": (
        (
            "tcpceiling doctor",
            "tcpceiling doctor --service nginx --warn 0.7 --crit 0.9",
            "tcpceiling doctor --netns blue --json",
        ),
        "0 ok, 1 warning, 2 critical, 3 unknown (bad input, an unreadable host)",
    ),
    "exporter": (
        (
            "tcpceiling exporter --listen :9877",
            "tcpceiling exporter --textfile /var/lib/node_exporter/textfile/tcpceiling.prom",
        ),
        "0 stopped by SIGINT or SIGTERM, 2 bad input (or the port in use), 3 unreadable host",
    ),
}


def _epilog(examples: tuple[str, ...], exits: str) -> str:
    lines = "\n".join(f"  {e}" for e in examples)
    return f"\b\nExamples:\n{lines}\n\n\b\nExit codes: {exits}"


def apply(group: click.Group) -> None:
    """Every command's epilog (its examples and exit codes), and the group's."""
    for name, (examples, exits) in USAGE.items():
        group.commands[name].epilog = _epilog(examples, exits)
    group.epilog = (
        "\b\nEach command has examples and its exit codes in its --help.\n"
        "Shell completion (bash; zsh and fish alike):\n"
        '  eval "$(_TCPCEILING_COMPLETE=bash_source tcpceiling)"'
    )
