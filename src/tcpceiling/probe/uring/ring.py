"""An io_uring instance driven from Python with no library: io_uring_setup(2) and
io_uring_enter(2) through libc's syscall(), the rings mapped with mmap. A submission
is a 64-byte entry packed into the shared array; a completion a 16-byte entry read
back (user_data, res, flags). Layouts and numbers: include/uapi/linux/io_uring.h.

Many entries are packed, then one io_uring_enter() submits them all and waits for
their completions: the point of the engine is one system call per batch instead of
one per step. The rings are set up with SINGLE_ISSUER and DEFER_TASKRUN (completion
work runs only when this task enters the kernel to wait) where the kernel has them.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import socket
import struct
import time
from collections.abc import Callable

SYS_IO_URING_SETUP, SYS_IO_URING_ENTER, SYS_IO_URING_REGISTER = 425, 426, 427  # syscall_64.tbl
REGISTER_PROBE, OP_SUPPORTED = 8, 1  # IORING_REGISTER_PROBE, IO_URING_OP_SUPPORTED
REGISTER_FILES2, RSRC_REGISTER_SPARSE = 13, 1 << 0  # a sparse table of direct descriptors
REGISTER_FILE_ALLOC_RANGE = 25  # where IORING_FILE_INDEX_ALLOC picks a slot (6.0)
RSRC_REGISTER = struct.Struct("<IIQQQ")  # struct io_uring_rsrc_register: nr, flags, ...
FILE_INDEX_RANGE = struct.Struct("<IIQ")  # struct io_uring_file_index_range: off, len
FILE_INDEX_ALLOC = 0xFFFFFFFF  # sqe->file_index: the kernel picks a free slot
PROBE_OPS = 256

OP_ACCEPT, OP_ASYNC_CANCEL, OP_CONNECT, OP_CLOSE = 13, 14, 16, 19
OP_SOCKET, OP_URING_CMD, OP_BIND = 45, 46, 56
SOCKET_URING_OP_SETSOCKOPT = 3  # include/uapi/linux/io_uring.h, enum io_uring_socket_op

STEP = 1 << 32  # user_data: a chain's kind times STEP, plus its index in the batch
CANCEL_ALL_ANY = 1 << 0 | 1 << 2  # IORING_ASYNC_CANCEL_ALL | _ANY: all in flight
CANCELLING = 1 << 63  # the user_data of that cancel's own completion
IOSQE_FIXED_FILE = 1 << 0  # sqe->fd is a slot of the registered table
IOSQE_IO_LINK = 1 << 2
IOSQE_CQE_SKIP_SUCCESS = 1 << 6
ACCEPT_MULTISHOT = 1 << 0  # in sqe->ioprio
CQE_F_MORE = 1 << 1

SETUP_CQSIZE, SETUP_SUBMIT_ALL = 1 << 3, 1 << 7
SETUP_SINGLE_ISSUER, SETUP_DEFER_TASKRUN = 1 << 12, 1 << 13
FEAT_SINGLE_MMAP = 1 << 0
ENTER_GETEVENTS, ENTER_EXT_ARG = 1 << 0, 1 << 3
OFF_SQ_RING, OFF_SQES = 0, 0x10000000

#: struct io_uring_sqe: opcode, flags, ioprio, fd, off/addr2, addr, len, op flags,
#: user_data, buf_index, personality, file_index/optlen, addr3/optval, pad
SQE = struct.Struct("<BBHiQQIIQHHIQQ")
CQE = struct.Struct("<QiI")
U32 = struct.Struct("<I")
PARAMS = struct.Struct("<10I7IIQ8IQ")  # io_uring_params with its two offset structs
EXT_ARG = struct.Struct("<QIIQ")  # io_uring_getevents_arg: sigmask, sz, pad, ts
TIMESPEC = struct.Struct("<qq")

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall  # variadic: an argument the kernel reads as 64 bits goes as
_syscall.restype = ctypes.c_long  # c_size_t/c_long, a bare int fills only 32 of them
_mmap = _libc.mmap
_mmap.restype = ctypes.c_void_p


class RingError(OSError):
    """io_uring could not be set up or entered (ENOSYS, EPERM under a seccomp filter
    or kernel.io_uring_disabled, ENOMEM past RLIMIT_MEMLOCK on older kernels)."""


class Buffers:
    """C copies of bytes a submission points to (addresses, option values), kept
    alive as long as the ring may read them."""

    def __init__(self) -> None:
        self.keep: list[ctypes.Array[ctypes.c_char]] = []

    def add(self, data: bytes) -> tuple[int, int]:
        """(address, length) of a kept copy of data."""
        buf = ctypes.create_string_buffer(data, len(data))
        self.keep.append(buf)
        return ctypes.addressof(buf), len(data)


def entry(op: int, fd: int, *, off: int = 0, addr: int = 0, length: int = 0,
          op_flags: int = 0, user_data: int = 0, flags: int = 0, ioprio: int = 0,
          file_index: int = 0, addr3: int = 0) -> bytes:  # fmt: skip
    """One submission entry's 64 bytes, as Ring.prep packs it in place: entries built
    once and copied in with Ring.put() cost no packing per request."""
    return SQE.pack(op, flags, ioprio, fd, off, addr, length, op_flags, user_data, 0, 0,
                    file_index, addr3, 0)  # fmt: skip


def _map(fd: int, size: int, offset: int) -> ctypes.Array[ctypes.c_char]:
    """The ring's area at `offset`, mapped shared and populated, as a buffer. Through
    libc's mmap, not Python's mmap module, which keeps a dup() of the fd per mapping:
    two fds more per worker, out of its nofile."""
    prot, flags = mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED | mmap.MAP_POPULATE
    addr = _mmap(None, ctypes.c_size_t(size), prot, flags, fd, ctypes.c_long(offset))
    _check(-1 if addr in (None, ctypes.c_void_p(-1).value) else 0)
    return (ctypes.c_char * size).from_address(addr)


def _check(ret: int) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise RingError(err, os.strerror(err))
    return ret


class Ring:
    """One ring: pack entries with prep(), submit and wait with submit(), read the
    completions with reap()."""

    def __init__(self, entries: int = 1024, completions: int = 0) -> None:
        """entries submissions; completions (4 x entries by default) in the CQ ring,
        where a batch's and a multishot accept's completions wait to be read."""
        params = ctypes.create_string_buffer(PARAMS.size)
        cq = completions or 4 * entries
        flags = SETUP_SUBMIT_ALL | SETUP_SINGLE_ISSUER | SETUP_DEFER_TASKRUN
        struct.pack_into("<III", params, 0, entries, cq, flags | SETUP_CQSIZE)
        try:
            self.fd = _check(_syscall(SYS_IO_URING_SETUP, entries, params))
        except RingError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: a kernel without those flags (< 6.1)
                raise
            struct.pack_into("<III", params, 0, entries, cq, SETUP_CQSIZE)
            self.fd = _check(_syscall(SYS_IO_URING_SETUP, entries, params))
        try:
            self._map(PARAMS.unpack_from(params, 0))
        except BaseException:
            os.close(self.fd)
            raise
        self.pending = 0  # packed, not yet submitted

    def _map(self, p: tuple[int, ...]) -> None:
        sq_entries, cq_entries, _flags, _cpu, _idle, features = p[:6]
        sq_head, sq_tail, sq_mask, _sq_n, _sq_flags, _dropped, sq_array = p[10:17]
        cq_head, cq_tail, cq_mask, _cq_n, _overflow, cqes = p[19:25]
        if not features & FEAT_SINGLE_MMAP:
            raise RingError(errno.ENOSYS, "io_uring without a single mapping (kernel < 5.4)")
        size = max(sq_array + 4 * sq_entries, cqes + 16 * cq_entries)
        self.rings = _map(self.fd, size, OFF_SQ_RING)
        self.sqes = _map(self.fd, 64 * sq_entries, OFF_SQES)
        self.sq_view = memoryview(self.sqes).cast("B")
        for i in range(sq_entries):  # the indirection array, fixed to the identity
            U32.pack_into(self.rings, sq_array + 4 * i, i)
        self.sq_head, self.sq_tail, self.sq_mask = sq_head, sq_tail, self.read(sq_mask)
        self.cq_head, self.cq_tail, self.cq_mask = cq_head, cq_tail, self.read(cq_mask)
        self.cqes, self.entries = cqes, sq_entries
        self.cq_entries = self.cq_mask + 1
        self.tail = self.read(sq_tail)

    def read(self, offset: int) -> int:
        value: int = U32.unpack_from(self.rings, offset)[0]
        return value

    def prep(self, op: int, fd: int, *, off: int = 0, addr: int = 0, length: int = 0,
             op_flags: int = 0, user_data: int = 0, flags: int = 0, ioprio: int = 0,
             file_index: int = 0, addr3: int = 0) -> None:  # fmt: skip
        """Pack one submission entry; a full submission ring is submitted first (its
        completions are read as the others are)."""
        if self.pending >= self.entries:
            self.submit()
        at = 64 * (self.tail & self.sq_mask)
        SQE.pack_into(self.sqes, at, op, flags, ioprio, fd, off, addr, length, op_flags,
                      user_data, 0, 0, file_index, addr3, 0)  # fmt: skip
        self.tail += 1
        self.pending += 1

    def put(self, raw: bytes | bytearray, count: int) -> None:
        """Copy `count` entries built with entry() to the tail (two copies where the
        ring wraps), submitting first a ring without room for them."""
        if self.pending + count > self.entries:
            self.submit()
        at = self.tail & self.sq_mask
        first = min(count, self.entries - at)
        src = memoryview(raw)
        self.sq_view[64 * at : 64 * (at + first)] = src[: 64 * first]
        if first < count:
            self.sq_view[: 64 * (count - first)] = src[64 * first : 64 * count]
        self.tail += count
        self.pending += count

    def prep_setsockopt(self, fd: int, level: int, name: int, value: tuple[int, int],
                        user_data: int, flags: int = 0) -> None:  # fmt: skip
        """setsockopt(fd, level, name, value at address value[0], value[1] bytes): the
        socket uring_cmd, level and name in sqe->level/optname (the addr field),
        optlen where file_index is, optval where addr3 is."""
        self.prep(OP_URING_CMD, fd, off=SOCKET_URING_OP_SETSOCKOPT, addr=level | name << 32,
                  file_index=value[1], addr3=value[0], flags=flags,
                  user_data=user_data)  # fmt: skip

    def prep_accept_multishot(self, fd: int, user_data: int, direct: bool = False) -> None:
        """accept4(fd, NULL, NULL, SOCK_CLOEXEC), one completion per connection until
        it ends (a completion without IORING_CQE_F_MORE); `direct`: into a slot the
        kernel allocates, without SOCK_CLOEXEC (io_accept_prep refuses it there)."""
        slot, cloexec = (FILE_INDEX_ALLOC, 0) if direct else (0, socket.SOCK_CLOEXEC)
        self.prep(OP_ACCEPT, fd, ioprio=ACCEPT_MULTISHOT, op_flags=cloexec,
                  file_index=slot, user_data=user_data)  # fmt: skip

    def submit(self, wait: int = 0, timeout: float | None = None) -> int:
        """Submit what was packed; wait for `wait` completions (at most `timeout`
        seconds when given). Returns how many entries the kernel took."""
        U32.pack_into(self.rings, self.sq_tail, self.tail & 0xFFFFFFFF)
        n, self.pending = self.pending, 0
        flags = ENTER_GETEVENTS  # with DEFER_TASKRUN, completions are posted only then
        arg, size = None, 0
        if wait and timeout is not None:
            ts = ctypes.create_string_buffer(TIMESPEC.pack(int(timeout), int(timeout % 1 * 1e9)))
            buf = ctypes.create_string_buffer(EXT_ARG.pack(0, 8, 0, ctypes.addressof(ts)))
            arg, size, flags = buf, EXT_ARG.size, flags | ENTER_EXT_ARG
        ret = _syscall(SYS_IO_URING_ENTER, self.fd, n, wait, flags, arg, ctypes.c_size_t(size))
        if ret < 0 and ctypes.get_errno() in (errno.ETIME, errno.EINTR):
            return n
        return _check(ret)

    def reap(self) -> list[tuple[int, int, int]]:
        """The completions ready now, oldest first: (user_data, res, flags)."""
        return unpack(self.reap_raw())

    def reap_raw(self) -> bytes:
        """The completions ready now, oldest first, as the kernel wrote them: 16 bytes
        each, which array("i", ...) reads in C as four ints (user_data's low and high
        halves, res, flags) with no tuple per completion."""
        head, tail = self.read(self.cq_head), self.read(self.cq_tail)
        count = (tail - head) & 0xFFFFFFFF
        at = head & self.cq_mask
        first = min(count, self.cq_entries - at)
        base = ctypes.addressof(self.rings) + self.cqes
        raw = ctypes.string_at(base + 16 * at, 16 * first)  # one copy, unpacked in C
        if first < count:  # the ring wrapped
            raw += ctypes.string_at(base, 16 * (count - first))
        U32.pack_into(self.rings, self.cq_head, tail)
        return raw

    def close(self) -> None:
        self.sq_view.release()
        for area in (self.sqes, self.rings):
            _libc.munmap(ctypes.c_void_p(ctypes.addressof(area)), ctypes.c_size_t(len(area)))
        os.close(self.fd)

    def __enter__(self) -> Ring:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class _Cancel:
    """complete()'s cancel of what was still in flight at its timeout: sent, the
    requests it found (its completion's res), the ECANCELED completions seen since
    its own. A cancelled connect or accept waits on a poll and completes in task
    work run after the cancel's completion is posted (io_poll_cancel_req(), io_uring/
    poll.c); a chain cancelled by its own failed link posted before it."""

    def __init__(self, bound: float) -> None:
        self.bound, self.sent = bound, False
        self.found: int | None = None
        self.ended = 0

    def saw(self, res: int) -> None:
        if self.found is not None and res == -errno.ECANCELED:
            self.ended += 1

    def over(self) -> bool:
        """Every request it found has completed, or the bound passed."""
        if not self.sent:
            return False
        done = self.found is not None and self.ended >= self.found
        return done or time.perf_counter() > self.bound


Completion = tuple[int, int, int]  # user_data, res, flags


def unpack(raw: bytes) -> list[Completion]:
    """Completions read by Ring.reap_raw(), one tuple each."""
    return list(CQE.iter_unpack(raw))


def gather(ring: Ring, expect: int, timeout: float) -> bytes:
    """Submit what is packed and wait, at most `timeout` seconds, for `expect`
    completions; every completion posted by then, as Ring.reap_raw() reads them. A
    batch's completions usually all come in this one wait, and its caller settles
    them in bulk; what it cannot settle so goes on to complete(first=unpack(...))."""
    ring.submit(wait=expect, timeout=timeout)
    return ring.reap_raw()


def complete(
    ring: Ring,
    expect: int,
    handle: Callable[[int, int, int], bool],
    timeout: float,
    first: list[Completion] | None = None,
    started: float | None = None,
) -> bool:
    """Submit what is packed, and hand every completion (those of `first`, already
    read, before any) to handle(user_data, res, flags) until it has said True
    `expect` times; past `timeout` seconds from `started` (now by default) cancel
    every request in flight (IORING_ASYNC_CANCEL_ALL | _ANY: they complete with
    ECANCELED, which handle() sees) and wait for those: the cancel's own result
    is how many it found, so a wait for requests that finished without a
    completion (IOSQE_CQE_SKIP_SUCCESS) ends too, at most `timeout` later. False
    if it had to cancel."""
    deadline = (time.perf_counter() if started is None else started) + timeout
    cancel = _Cancel(deadline + timeout)
    got = sum(1 for user, res, flags in first or () if handle(user, res, flags))
    while got < expect and not cancel.over():
        left = deadline - time.perf_counter()
        if left <= 0 and not cancel.sent:
            ring.prep(OP_ASYNC_CANCEL, -1, op_flags=CANCEL_ALL_ANY, user_data=CANCELLING)
            cancel.sent = True
        ring.submit(wait=expect - got, timeout=max(left, 0.05))
        for user, res, flags in ring.reap():
            if user == CANCELLING:
                cancel.found = max(res, 0)
                continue
            cancel.saw(res)
            if handle(user, res, flags):
                got += 1
    return not cancel.sent


def supported(ring: Ring) -> frozenset[int]:
    """The opcodes this kernel has (IORING_REGISTER_PROBE: struct io_uring_probe, a
    16-byte head, its last opcode at +0, then 8 bytes per opcode, flags at +2)."""
    buf = ctypes.create_string_buffer(16 + 8 * PROBE_OPS)
    if _syscall(SYS_IO_URING_REGISTER, ring.fd, REGISTER_PROBE, buf, PROBE_OPS) < 0:
        return frozenset()
    raw = bytes(buf)
    flags = (struct.unpack_from("<H", raw, 16 + 8 * op + 2)[0] for op in range(raw[0] + 1))
    return frozenset(op for op, f in enumerate(flags) if f & OP_SUPPORTED)


def chains(
    ring: Ring,
    expect: int,
    final: Callable[[int], bool],
    timeout: float,
    aside: Callable[[int, int, int], bool | None] | None = None,
    first: list[Completion] | None = None,
    started: float | None = None,
) -> dict[int, int]:
    """complete() for linked chains whose user_data is STEP * kind + index: wait for
    `expect` final completions, {index: res}. A chain's step that failed (bind:
    the source is not local) posts its own error and cancels the rest of the
    chain: the final request is given that error; one cancelled at the timeout
    is ETIMEDOUT. aside() takes the completions that belong to no chain (None:
    not one of its own; else whether it counts toward `expect`). `first` and
    `started`: as complete() takes them, after a gather()."""
    done: dict[int, int] = {}
    failed: dict[int, int] = {}

    def handle(user: int, res: int, flags: int) -> bool:
        if aside is not None and (counts := aside(user, res, flags)) is not None:
            return counts
        j = user & (STEP - 1)
        if not final(user):
            failed.setdefault(j, res)
            return False
        done[j] = failed.get(j, -errno.ETIMEDOUT) if res == -errno.ECANCELED else res
        return True

    complete(ring, expect, handle, timeout, first, started)
    return done


def register_direct(ring: Ring, slots: int, allocated_from: int) -> None:
    """A sparse table of `slots` direct descriptors on `ring` (IORING_REGISTER_FILES2,
    5.19), the kernel allocating from slot `allocated_from` up (IORING_REGISTER_FILE_
    ALLOC_RANGE, 6.0): below it the slots this program names itself. The table's size
    counts against RLIMIT_NOFILE (io_sqe_files_register: EMFILE past it), its sockets
    do not: they are in no fd table."""
    reg = ctypes.create_string_buffer(RSRC_REGISTER.pack(slots, RSRC_REGISTER_SPARSE, 0, 0, 0))
    _check(_syscall(SYS_IO_URING_REGISTER, ring.fd, REGISTER_FILES2, reg, RSRC_REGISTER.size))
    span = FILE_INDEX_RANGE.pack(allocated_from, slots - allocated_from, 0)
    rng = ctypes.create_string_buffer(span)
    _check(_syscall(SYS_IO_URING_REGISTER, ring.fd, REGISTER_FILE_ALLOC_RANGE, rng, 0))
