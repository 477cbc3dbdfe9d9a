"""Options of the commands that open connections (probe, rate, compare-io)."""

from __future__ import annotations

import click

from tcpceiling.cli.common import CHECK_HELP, CHECK_SPEC, F, FiniteRange

SYSCTL_OPTION = click.option(
    "--sysctl",
    "sysctls",
    multiple=True,
    metavar="KEY=VALUE",
    help="A net.* sysctl set inside the run's namespace only.",
)
RUN_NETNS_OPTION = click.option(
    "--netns", default=None, help="Run inside this existing network namespace."
)


ENGINE_OPTION = click.option(
    "--engine",
    type=click.Choice(["auto", "uring", "epoll"]),
    default="auto",
    show_default=True,
    envvar="TCPCEILING_ENGINE",
    help="Open (and accept) in io_uring batches, or one system call at a time on epoll; "
    "auto: io_uring where the kernel allows it. The result says which ran.",
)


def server_options(fn: F) -> F:
    """probe's options for real servers."""
    options = [
        click.option(
            "--connect",
            multiple=True,
            metavar="HOST:PORT",
            help="Probe this server instead of the built-in sink (repeatable; IPv4, "
            "[IPv6]:port or a hostname).",
        ),
        click.option(
            "--check",
            type=CHECK_SPEC,
            default="none",
            show_default=True,
            help=CHECK_HELP,
        ),
        click.option(
            "--check-timeout",
            type=FiniteRange(min=0.05),
            default=2.0,
            show_default=True,
            help="Seconds to wait for the check's reply before a connection counts as silent.",
        ),
        click.option(
            "--check-every",
            type=FiniteRange(min=0.05),
            default=None,
            metavar="SECONDS",
            help="Re-check a sample of held connections this often.",
        ),
        click.option(
            "--settle",
            type=FiniteRange(min=0.0, max=60.0),
            default=0.1,
            show_default=True,
            metavar="SECONDS",
            help="A connection whose check passed counts as served only if the server neither "
            "refuses nor closes it within this time (and 4 round trips of the check): a "
            "greeting followed by an error line is a refusal.",
        ),
        click.option(
            "--server-pid",
            type=click.IntRange(min=1),
            default=None,
            help="The server's pid, for fd-limit evidence (default: the listener's owner).",
        ),
        click.option(
            "--path-netns",
            default=None,
            metavar="NAME",
            help="A network namespace on the path (a NAT, a firewall, the server's): its "
            "NAT ports, connection caps and conntrack counters explain timeouts and refusals.",
        ),
        RUN_NETNS_OPTION,
        click.option(
            "--max-pending",
            type=click.IntRange(min=1),
            default=1024,
            show_default=True,
            help="Handshakes and checks in flight per worker.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def activity_options(fn: F) -> F:
    """probe's options for the sink's I/O model and traffic."""
    options = [
        click.option(
            "--io-model",
            type=click.Choice(["epoll", "threads"]),
            default="epoll",
            show_default=True,
            help="The sink's model: one event loop, or one thread per connection.",
        ),
        click.option(
            "--message-rate",
            type=FiniteRange(min=0),
            default=0.0,
            metavar="R",
            help="Messages per held connection per second, echoed by the sink, "
            "for --hold seconds (5 if not given).",
        ),
        click.option(
            "--message-bytes",
            type=click.IntRange(min=1),
            default=64,
            show_default=True,
            help="Bytes per message, with --message-rate.",
        ),
        click.option(
            "--wake-samples",
            type=click.IntRange(min=0),
            default=0,
            help="Per client worker: one-byte round trips on random held connections.",
        ),
        click.option(
            "--measure-cpu",
            is_flag=True,
            help="Measure the server's CPU per message (--message-rate 1 unless given); "
            "feed the JSON to `analyze --cost-from`.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn
