"""Named network namespaces made, entered and removed by tcpceiling.host.netns: real
namespaces, real setns(2). pyroute2 does the making in a child that exits, so the
process that measures never carries it; entering is the calling thread's alone."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import uuid

import pytest

from tests.conftest import IS_ROOT

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="needs root: creates network namespaces")


def _own_netns() -> str:
    return os.readlink("/proc/thread-self/ns/net")


def test_made_enters_and_removes_without_pyroute2_in_this_process() -> None:
    """In a fresh interpreter: a namespace made, loopback up inside it, an address
    added, entered and left, then gone, and pyroute2 never imported there."""
    name = f"tcx-{uuid.uuid4().hex[:8]}"
    code = f"""
import sys, socket
from tcpceiling.host import netns
with netns.made({name!r}):
    netns.add_addresses({name!r}, ("127.9.9.9",))
    with netns.inside({name!r}):
        s = socket.socket(); s.bind(("127.9.9.9", 0)); s.listen(); s.close()
        assert open("/sys/class/net/lo/operstate").read().strip() in ("unknown", "up")
print("pyroute2" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert name not in listed


def test_inside_moves_only_the_calling_thread_and_brings_it_back(netns: str) -> None:
    """A thread enters the namespace; the main thread stays where it was throughout,
    and the thread is back in its own on leaving (a namespace saved as /proc/self's
    would be the main thread's, not the thread's)."""
    from tcpceiling.host.netns import inside

    home = _own_netns()
    main_tid = threading.get_native_id()
    seen: list[str] = []

    def enter() -> None:
        with inside(netns):
            seen.append(_own_netns())
            seen.append(os.readlink(f"/proc/self/task/{main_tid}/ns/net"))
        seen.append(_own_netns())

    t = threading.Thread(target=enter)
    t.start()
    t.join(10)
    inner, main_meanwhile, after = seen
    assert inner != home and main_meanwhile == home and after == home
    assert _own_netns() == home


def test_a_failure_in_the_child_is_raised_here_with_its_errno() -> None:
    """Making a namespace whose name is taken fails in the child; the parent raises
    OSError with EEXIST, and the namespace already there is left as it was."""
    from tcpceiling.host import netns

    name = f"tcx-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        with pytest.raises(OSError) as caught:
            netns.create(name)
        assert caught.value.errno == errno.EEXIST, caught.value
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
        assert name in listed.stdout
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)
