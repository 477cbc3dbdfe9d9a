"""The `probe --check` kinds that speak a server's own protocol, each given by its
server's module: an explicit registry, as the servers' is (registry.py)."""

from __future__ import annotations

from tcpceiling.servers import memcached, postgresql, redis
from tcpceiling.servers.model import LineCheck, WireCheck

#: Line protocols: the request, the reply prefixes that serve and the server's errors.
LINE_CHECKS: dict[str, LineCheck] = {"redis": redis.CHECK, "memcached": memcached.CHECK}
#: One-time handshakes: the request, its judge, what counts as served.
WIRE_CHECKS: dict[str, WireCheck] = {"postgres": postgresql.CHECK}
