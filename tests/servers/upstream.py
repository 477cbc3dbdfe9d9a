"""An HTTP upstream that holds every request open (tests only): a proxy's backend whose
responses stream for as long as the client stays, so each proxied client keeps one
connection toward it.

usage: python upstream.py [--answer] HOST PORT [HOST PORT ...]

On each connection it reads the request's head, answers "HTTP/1.1 200 OK" with a
chunked body, sends one chunk ("held\\n"), and keeps the connection until the peer
closes it. With --answer it answers each request whole (Content-Length) and keeps
the connection for the next one, whatever the request's Connection header says: the
proxy, having its whole response, closes first. It prints "ready" once every address
listens, then "holding N" each time the number of requests it holds changes: the
test's independent count of what the proxy forwarded.
"""

from __future__ import annotations

import asyncio
import sys

HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nheld\n\r\n"
)
MAX_HEAD = 16384


class Holding:
    def __init__(self) -> None:
        self.n = 0

    def add(self, d: int) -> None:
        self.n += d
        print(f"holding {self.n}", flush=True)


WHOLE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"


async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Every request answered whole; the connection kept until the peer closes it."""
    try:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(WHOLE)
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(count: Holding, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        writer.close()
        return
    writer.write(HEAD)
    count.add(1)
    try:
        await writer.drain()
        while await reader.read(4096):
            pass
    except ConnectionError:
        pass
    finally:
        count.add(-1)
        writer.close()


async def main(addresses: list[tuple[str, int]], whole: bool) -> None:
    count = Holding()
    servers = [
        await asyncio.start_server(
            (answer if whole else lambda r, w: serve(count, r, w)),
            host,
            port,
            backlog=4096,
            limit=MAX_HEAD,
        )
        for host, port in addresses
    ]
    print("ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    args = sys.argv[1:]
    whole = args[:1] == ["--answer"]
    args = args[1:] if whole else args
    pairs = [(args[i], int(args[i + 1])) for i in range(0, len(args) - 1, 2)]
    asyncio.run(main(pairs, whole))
