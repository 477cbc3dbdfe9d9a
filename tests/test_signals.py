"""SIGTERM and SIGINT as a run takes them (tcpceiling.signals): a real signal to this
process, including one whose KeyboardInterrupt Python drops (raised inside a
__del__, as inside an at-fork hook), which a run must still end on."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from tcpceiling.signals import deferred, ended_by_signal, raise_if_caught, unless_interrupted


class SignalledOnCollection:
    """Sends SIGTERM to this process from its __del__: the handler's
    KeyboardInterrupt is raised there, where Python prints and drops it."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)


def test_a_lost_interrupt_is_raised_again_at_the_next_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dropped: list[type[BaseException] | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: dropped.append(u.exc_type))
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), ended_by_signal():
        SignalledOnCollection()  # collected at once: the interrupt is lost in __del__
        assert dropped == [KeyboardInterrupt]  # lost indeed
        unless_interrupted("target")  # a step that ended normally: the tour ends here
        pytest.fail("the run went on after SIGTERM")
    assert signal.getsignal(signal.SIGTERM) is before
    raise_if_caught()  # outside the run: nothing remembered


def test_a_signal_during_a_clean_up_waits_for_its_end() -> None:
    done = []
    with pytest.raises(KeyboardInterrupt), ended_by_signal(), deferred():
        os.kill(os.getpid(), signal.SIGINT)
        done.append("the clean-up finished")
    assert done == ["the clean-up finished"]
