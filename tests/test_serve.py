"""`tcpceiling serve` accepts, echoes, and stays bounded; it stops on its own."""

from __future__ import annotations

import socket
import subprocess
import sys
import time


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_echo_and_many_connections() -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tcpceiling",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--echo",
            "--shards",
            "2",
            "--duration",
            "20",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                first = socket.create_connection(("127.0.0.1", port), timeout=2)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "serve never listened"
                time.sleep(0.1)
        first.sendall(b"ping")
        assert first.recv(16) == b"ping"
        held = [socket.create_connection(("127.0.0.1", port), timeout=2) for _ in range(300)]
        for s in held[:10]:  # a client sending a lot does not grow the sink
            s.sendall(b"x" * 200_000)
        for s in [first, *held]:
            s.close()
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    accepted = int(err.split("accepted ")[-1].split()[0].replace(",", ""))
    assert accepted == 301, err
