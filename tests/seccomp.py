"""A seccomp filter that refuses io_uring_setup(2) with EPERM, as a container
runtime's default profile does (Docker's since 25.0): for a child process, set in
its preexec_fn. The program (Documentation/userspace-api/seccomp_filter.rst):
x86_64 or allow; io_uring_setup -> SECCOMP_RET_ERRNO | EPERM; anything else allowed."""

from __future__ import annotations

import ctypes
import errno
import struct

PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
AUDIT_ARCH_X86_64 = 0xC000003E
SYS_IO_URING_SETUP = 425
LD_W_ABS, JEQ_K, RET_K = 0x20, 0x15, 0x06  # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K
RET_ERRNO, RET_ALLOW = 0x00050000, 0x7FFF0000
PROGRAM = (  # (code, jump if true, jump if false, k)
    (LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
    (JEQ_K, 0, 3, AUDIT_ARCH_X86_64),
    (LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
    (JEQ_K, 0, 1, SYS_IO_URING_SETUP),
    (RET_K, 0, 0, RET_ERRNO | errno.EPERM),
    (RET_K, 0, 0, RET_ALLOW),
)


def refuse_io_uring() -> None:
    """Install the filter on the calling process (and so on its children)."""
    libc = ctypes.CDLL(None, use_errno=True)
    code = b"".join(struct.pack("<HBBI", *ins) for ins in PROGRAM)
    filters = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("<H6xQ", len(PROGRAM), ctypes.addressof(filters))  # sock_fprog
    prog = ctypes.create_string_buffer(fprog)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) or libc.prctl(
        PR_SET_SECCOMP, SECCOMP_MODE_FILTER, prog, 0, 0
    ):
        raise OSError(ctypes.get_errno(), "seccomp filter not installed")
