"""A WebSocket server with a connection limit, for the probe's tests: the RFC 6455
opening handshake for up to LIMIT clients at once. Past it, `--past 503` answers
503 and closes; `--past close` upgrades, then sends a close frame 1013 "Try Again
Later" (§7.4.1) in the same write and closes. With `--ping SECONDS` it pings every
held client that often and closes (1002) any that did not pong since the last ping.
It answers pings with pongs. usage: python ws_server.py PORT LIMIT [--past 503|close]
[--ping SECONDS]   (prints "ready" once listening)"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import struct

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CLOSE, PING, PONG = 0x8, 0x9, 0xA


def frame(opcode: int, payload: bytes = b"") -> bytes:
    return bytes([0x80 | opcode, len(payload)]) + payload


def close(code: int, reason: bytes) -> bytes:
    return frame(CLOSE, struct.pack(">H", code) + reason)


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One client frame (masked, §5.3), small control frames and short data."""
    b0, b1 = await reader.readexactly(2)
    size = b1 & 0x7F
    if size == 126:
        size = struct.unpack(">H", await reader.readexactly(2))[0]
    key = await reader.readexactly(4) if b1 & 0x80 else b"\0\0\0\0"
    body = await reader.readexactly(size)
    return b0 & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(body))


def accept_head(head: bytes) -> bytes:
    key = next(
        line.split(b":", 1)[1].strip()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )


async def pinger(writer: asyncio.StreamWriter, ponged: list[bool], every: float) -> None:
    while True:
        ponged[0] = False
        writer.write(frame(PING, b"srv"))
        await asyncio.sleep(every)
        if not ponged[0]:
            writer.write(close(1002, b"no pong"))
            writer.close()
            return


async def main(args: argparse.Namespace) -> None:
    active = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ponged = [True]
        task = asyncio.create_task(pinger(writer, ponged, args.ping)) if args.ping else None
        try:
            while True:
                opcode, payload = await read_frame(reader)
                if opcode == PING:
                    writer.write(frame(PONG, payload))
                elif opcode == PONG:
                    ponged[0] = True
                elif opcode == CLOSE:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            if task:
                task.cancel()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal active
        head = await reader.readuntil(b"\r\n\r\n")
        if active >= args.limit:
            if args.past == "503":
                writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            else:
                writer.write(accept_head(head) + close(1013, b"Try Again Later"))
            await writer.drain()
            writer.close()
            return
        writer.write(accept_head(head))
        active += 1
        try:
            await serve(reader, writer)
        finally:
            active -= 1
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", args.port, backlog=256)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    cli = argparse.ArgumentParser()
    cli.add_argument("port", type=int)
    cli.add_argument("limit", type=int)
    cli.add_argument("--past", choices=("503", "close"), default="503")
    cli.add_argument("--ping", type=float, default=0.0)
    asyncio.run(main(cli.parse_args()))
