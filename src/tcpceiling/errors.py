"""Exceptions shared by the library. The CLI maps InputError to exit code 2."""


class TcpceilingError(Exception):
    """Base class of every error this package raises on purpose."""


class ParseError(TcpceilingError, ValueError):
    """Text from /proc, /sys or a cgroup file was not in the expected format."""


class InputError(TcpceilingError, ValueError):
    """The user asked for something malformed or impossible (exit code 2)."""


class HostError(TcpceilingError):
    """The host could not be read (exit code 3): a netlink dump or a file failed."""
