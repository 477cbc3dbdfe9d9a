"""A plain asyncio TCP echo server, as a user might write one (tests only).

Run under `prlimit --nofile=N`: at its fd limit asyncio's accept() fails with EMFILE,
it logs and retries a second later, and new connections wait in the accept queue:
ESTABLISHED for the client, never served.
"""

import asyncio
import sys


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass  # probes release with RST
    writer.close()


async def main(port: int, backlog: int) -> None:
    server = await asyncio.start_server(echo, "127.0.0.1", port, backlog=backlog)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
