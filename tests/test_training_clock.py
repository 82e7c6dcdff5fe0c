"""A background training run paused by `kill -STOP` does not count the pause as training (training/clock.py)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from textgen.training.clock import TrainingClock


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="no SIGSTOP/SIGCONT on this system")
def test_a_step_paused_by_sigstop_counts_as_a_typical_step():
    clock = TrainingClock()
    try:
        for _ in range(5):
            time.sleep(0.02)  # five steps of about 20 ms
            clock.lap()
        # Something on the machine pauses this process for two seconds, then lets it go on.
        subprocess.Popen([sys.executable, "-c", f"import os, signal, time; time.sleep(2.0); "
                                                f"os.kill({os.getpid()}, signal.SIGCONT)"])
        os.kill(os.getpid(), signal.SIGSTOP)
        time.sleep(0.02)
        elapsed = clock.lap()
    finally:
        clock.close()
    assert clock.paused_seconds >= 1.5
    assert elapsed < 1.5  # six steps of about 20 ms, not the two seconds it stood still


def test_without_a_pause_it_is_the_wall_clock_and_a_resumed_run_starts_where_it_was():
    clock = TrainingClock(already=100.0)
    try:
        time.sleep(0.05)
        assert 100.04 <= clock.lap() < 101.0
        assert clock.paused_seconds == 0.0
    finally:
        clock.close()
