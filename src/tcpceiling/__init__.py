"""tcpceiling: how many TCP connections can this machine hold, and what stops it."""

__version__ = "0.1.0"
