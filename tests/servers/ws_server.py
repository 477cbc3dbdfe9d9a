"""A WebSocket server with a connection limit, for the probe's tests: the RFC 6455
opening handshake for up to LIMIT clients at once; past it, 503 and close.
usage: python ws_server.py PORT LIMIT   (prints "ready" once listening)"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import sys

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def main(port: int, limit: int) -> None:
    active = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal active
        head = await reader.readuntil(b"\r\n\r\n")
        if active >= limit:
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        await writer.drain()
        active += 1
        try:
            while await reader.read(65536):
                pass
        finally:
            active -= 1
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=256)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
