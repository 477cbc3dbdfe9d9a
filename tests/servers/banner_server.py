"""A line-protocol server that speaks first, as SMTP does (RFC 5321 §4.2): "220
ready" to up to LIMIT clients at once; past them "421 too many connections" and
close, the way Postfix's smtpd answers past its process limit. For the generic
`--check expect:...` test. usage: python banner_server.py PORT LIMIT (prints "ready")"""

from __future__ import annotations

import asyncio
import sys


async def main(port: int, limit: int) -> None:
    active = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal active
        if active >= limit:
            writer.write(b"421 4.7.0 tcpceiling-test Error: too many connections\r\n")
            await writer.drain()
            writer.close()
            return
        active += 1
        writer.write(b"220 tcpceiling-test ESMTP ready\r\n")
        try:
            while await reader.read(4096):
                pass
        except ConnectionError:
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
