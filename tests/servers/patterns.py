"""Servers that model what real servers do at their connection cap (tests only).

usage: python patterns.py PATTERN PORT CAP [BACKLOG]

Each greets a client it keeps ("+OK tcpceiling-test ready" for the line patterns,
"220 ..." for the slow one) and prints "ready" once listening, then "holding N"
every time the number of clients it keeps changes: the test's independent count.
Past CAP:

- greet-refuse: greets, then in a later segment says "-ERR max number of clients
  reached" and closes (message brokers and line protocols: the greeting is written
  before the admission check, as NATS's INFO or a Redis-like reply);
- greet-close: greets, then closes without a word;
- slow: a thread per connection, accepting at most 100 a second, says
  "421 too many connections" and closes (an inetd- or fork-style daemon);
- evict: closes the oldest client it keeps to admit the newest;
- evict-bye: the same, saying "BYE" to the oldest before closing it (run it with a
  backlog equal to its cap, as a server whose listen backlog is its process limit);
- spawn: a pool of workers started on demand, each serving one client until it
  leaves: one runs from the start, and while connections wait in the queue another
  is started every SPAWN_S seconds, past the probe's check timeout, up to CAP (a
  process manager forking on demand, PHP-FPM's ondemand); past CAP they wait;
- pause: stops calling accept() while it keeps CAP (the listener stays open, so
  new handshakes wait in its accept queue until the queue is full);
- http-split: HTTP/1.1 with keep-alive, each response's head and body in separate
  writes (gunicorn's); past CAP it answers the request the same way, then closes;
- http-503: HTTP/1.1 with keep-alive, counting every open connection, idle ones
  included, toward CAP: a request that finds CAP open (its own among them) is
  answered 503 and closed, so it keeps CAP - 1 (uvicorn's --limit-concurrency).
"""

from __future__ import annotations

import collections
import contextlib
import selectors
import socket
import sys
import threading
import time

GREETING = b"+OK tcpceiling-test ready\r\n"
REFUSAL = b"-ERR max number of clients reached\r\n"
BYE = b"BYE too many clients, the oldest goes\r\n"
LATER = 0.005  # seconds between the greeting and the refusal: two segments
SLOW_ACCEPT = 0.01  # at most 100 accepts a second
SPAWN_S = 2.5  # a worker started on demand: later than the probe's 2 s check timeout


class Count:
    """The clients kept, printed on every change (thread-safe for the slow one)."""

    def __init__(self) -> None:
        self.n = 0
        self.lock = threading.Lock()

    def add(self, d: int, cap: int | None = None) -> bool:
        """Count d more (False, and no change, when that would pass cap)."""
        with self.lock:
            if cap is not None and self.n + d > cap:
                return False
            self.n += d
            print(f"holding {self.n}", flush=True)
            return True


def listen(port: int, backlog: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(backlog)
    return s


class Loop:
    """One thread, one selector: the greet-refuse, greet-close, evict and pause patterns."""

    def __init__(self, pattern: str, lsock: socket.socket, cap: int) -> None:
        self.pattern, self.lsock, self.cap = pattern, lsock, cap
        self.sel = selectors.DefaultSelector()
        self.kept: collections.OrderedDict[socket.socket, None] = collections.OrderedDict()
        self.later: list[tuple[float, socket.socket]] = []  # refusals due
        self.count = Count()
        self.listening = False
        self.resume()

    def resume(self) -> None:
        if not self.listening:
            self.sel.register(self.lsock, selectors.EVENT_READ)
            self.listening = True

    def pause(self) -> None:
        if self.listening:
            self.sel.unregister(self.lsock)
            self.listening = False

    def run(self) -> None:
        while True:
            for key, _ in self.sel.select(timeout=LATER):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                self.accept() if sock is self.lsock else self.read(sock)
            self.refuse_due()

    def accept(self) -> None:
        conn, _ = self.lsock.accept()
        conn.setblocking(False)
        self.send(conn, GREETING)
        if len(self.kept) >= self.cap and self.pattern in ("evict", "evict-bye"):
            oldest = next(iter(self.kept))
            if self.pattern == "evict-bye":
                self.send(oldest, BYE)
            self.drop(oldest)
        if len(self.kept) >= self.cap:
            self.later.append((time.monotonic() + LATER, conn))
            return
        self.kept[conn] = None
        self.sel.register(conn, selectors.EVENT_READ)
        self.count.add(1)
        if self.pattern == "pause" and len(self.kept) >= self.cap:
            self.pause()

    def refuse_due(self) -> None:
        now = time.monotonic()
        for due, conn in [x for x in self.later if x[0] <= now]:
            self.later.remove((due, conn))
            if self.pattern == "greet-refuse":
                self.send(conn, REFUSAL)
            conn.close()

    def read(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(4096)
        except OSError:
            data = b""
        if not data:
            self.drop(conn)

    def drop(self, conn: socket.socket) -> None:
        self.sel.unregister(conn)
        del self.kept[conn]
        conn.close()
        self.count.add(-1)
        if self.pattern == "pause":
            self.resume()

    @staticmethod
    def send(conn: socket.socket, data: bytes) -> None:
        with contextlib.suppress(OSError):
            conn.send(data)


def kept_until_gone(conn: socket.socket, count: Count) -> None:
    """A kept client, counted until it closes (a thread per client)."""
    try:
        while conn.recv(4096):
            pass
    except OSError:
        pass
    count.add(-1)


def slow(lsock: socket.socket, cap: int) -> None:
    """Accept one connection every SLOW_ACCEPT seconds; a thread serves each."""
    count = Count()

    def serve(conn: socket.socket) -> None:
        with conn:
            if not count.add(1, cap):
                Loop.send(conn, b"421 4.7.0 tcpceiling-test too many connections\r\n")
                return
            Loop.send(conn, b"220 tcpceiling-test ready\r\n")
            kept_until_gone(conn, count)

    while True:
        conn, _ = lsock.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
        time.sleep(SLOW_ACCEPT)


def spawn(lsock: socket.socket, cap: int) -> None:
    """Workers that each accept one client, greet it and keep it until it leaves;
    one more started every SPAWN_S while connections wait, up to cap."""
    count = Count()

    def worker() -> None:
        while True:
            conn, _ = lsock.accept()
            with conn:
                Loop.send(conn, GREETING)
                count.add(1)
                kept_until_gone(conn, count)

    threading.Thread(target=worker, daemon=True).start()
    workers = 1
    sel = selectors.DefaultSelector()
    sel.register(lsock, selectors.EVENT_READ)
    while True:
        time.sleep(SPAWN_S)
        if workers < cap and sel.select(0):  # a connection waits: start one more
            threading.Thread(target=worker, daemon=True).start()
            workers += 1


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\n"
UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 19\r\nConnection: close\r\n\r\n"
    b"Service Unavailable"
)


def http(pattern: str, lsock: socket.socket, cap: int) -> None:
    """The HTTP patterns: a thread per connection, every request answered."""
    count, lock = Count(), threading.Lock()
    state = {"open": 0}

    def serve(conn: socket.socket) -> None:
        with conn:
            with lock:
                state["open"] += 1
            kept = False
            try:
                while conn.recv(4096):
                    with lock:
                        full = state["open"] >= cap if pattern == "http-503" else count.n >= cap
                    if pattern == "http-503" and full:
                        conn.sendall(UNAVAILABLE)
                        return
                    conn.sendall(HEAD)
                    time.sleep(LATER)  # the body in a segment of its own
                    conn.sendall(b"ok\n")
                    if not kept and not full:
                        kept = count.add(1, cap)
                    if not kept:
                        return  # answered, then closed: not kept
            except OSError:
                pass
            finally:
                with lock:
                    state["open"] -= 1
                if kept:
                    count.add(-1)

    while True:
        conn, _ = lsock.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def main(pattern: str, port: int, cap: int, backlog: int) -> None:
    lsock = listen(port, backlog)
    print("ready", flush=True)
    if pattern == "slow":
        slow(lsock, cap)
        return
    if pattern == "spawn":
        spawn(lsock, cap)
        return
    if pattern.startswith("http-"):
        http(pattern, lsock, cap)
        return
    lsock.setblocking(False)
    Loop(pattern, lsock, cap).run()


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0], int(args[1]), int(args[2]), int(args[3]) if len(args) > 3 else 128)
