"""service/stopping.py: SIGTERM and SIGINT always end the main thread's wait, however busy the
other threads are (issue #13 item 11: a handler that set a threading.Event deadlocked)."""
from __future__ import annotations

import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 20

# The conditions that make a handler interrupt the main thread inside its wait: threads that
# keep the GIL busy, a switch interval that hands the GIL over after every few bytecodes, and a
# main thread that does little else than wait (a timeout of 0: the wait's own code, over and over).
CHILD = f"""
import sys, threading
from service.stopping import StopSignals

def spin():
    n = 0
    while True:
        n += 1

for _ in range(2):
    threading.Thread(target=spin, daemon=True).start()
sys.setswitchinterval(1e-6)
for round in range({ROUNDS}):
    with StopSignals() as stop:
        print("ready", flush=True)
        while stop.wait(0) is None:
            pass
        print("stopped", stop.received[0], flush=True)
"""


def _lines(child: subprocess.Popen) -> queue.Queue:
    """The child's output lines, read by a thread (select on a buffered pipe would miss lines)."""
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in child.stdout:
            lines.put(line.strip())

    threading.Thread(target=read, daemon=True).start()
    return lines


def _next(lines: queue.Queue, timeout: float) -> str | None:
    """The next line, or None when the child says nothing for `timeout` seconds."""
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return None


def test_stop_signals_at_random_moments_always_end_the_wait():
    child = subprocess.Popen([sys.executable, "-c", CHILD], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    lines, rng = _lines(child), random.Random()
    try:
        for n in range(ROUNDS):
            assert _next(lines, 30) == "ready"
            time.sleep(rng.uniform(0, 0.02))
            signum = signal.SIGTERM if n % 4 else signal.SIGINT
            child.send_signal(signum)
            answer = _next(lines, 5)
            assert answer == f"stopped {int(signum)}", f"signal {n + 1} of {ROUNDS} not handled within 5 s (deadlock)"
        assert child.wait(timeout=10) == 0
    finally:
        child.kill()
        child.communicate(timeout=10)


def test_outside_the_with_block_the_previous_handlers_are_back():
    from service.stopping import StopSignals

    before = signal.getsignal(signal.SIGTERM)
    with StopSignals() as stop:
        assert signal.getsignal(signal.SIGTERM) == stop._note
        assert stop.wait(0) is None
        signal.raise_signal(signal.SIGTERM)
        assert stop.wait(1) == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before
