"""
What the benchmarks share: the machine's idleness, CPU accounting of this
process and its children, free ports, verdicts, and cleanup on signals.

The scripts run as files (C{python bench/transfer.py}); they put the checkout
on C{sys.path} first so that C{bench.harness} imports.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import NoReturn

#: Idle fraction below which the machine counts as busy.
IDLE_THRESHOLD = 0.85
#: Clock ticks per second, the unit of C{/proc} CPU times.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and why."""


class Interrupted(BaseException):
    """SIGTERM or SIGHUP arrived; raised so that the cleanup in C{finally} blocks runs."""


def cpu_times() -> tuple[int, int]:
    """
    System-wide CPU time from C{/proc/stat}.

    @return: C{(busy, total)} in clock ticks, summed over all CPUs; idle and iowait
        count as not busy.
    """
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice]
    total = sum(fields[:8])
    return total - fields[3] - fields[4], total


def idle_fraction(interval: float = 1.0) -> float:
    """Fraction of all CPU time that was idle over the next C{interval} seconds."""
    busy0, total0 = cpu_times()
    time.sleep(interval)
    busy1, total1 = cpu_times()
    return 1.0 - (busy1 - busy0) / max(total1 - total0, 1)


def wait_for_idle(max_wait: float, label: str) -> float:
    """
    Wait until the machine is mostly idle, or C{max_wait} seconds have passed.

    @param label: What is about to run, for the warning.
    @return: The idle fraction of the last one-second sample.
    """
    deadline = time.monotonic() + max_wait
    idle = idle_fraction()
    while idle < IDLE_THRESHOLD and time.monotonic() < deadline:
        idle = idle_fraction()
    if idle < IDLE_THRESHOLD:
        print(
            f"WARNING: machine only {idle:.0%} idle before {label} "
            f"(load average {os.getloadavg()[0]:.2f}); figures will be noisy",
            flush=True,
        )
    return idle


def children_cpu() -> float:
    """CPU seconds (user plus system) used by this process's waited-for children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu() -> float:
    """CPU seconds (user plus system) used by this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def free_port() -> int:
    """A currently unused TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def verdict(ok: bool) -> str:
    """C{PASS} or C{FAIL}."""
    return "PASS" if ok else "FAIL"


def _raise_interrupted(signum: int, frame: FrameType | None) -> NoReturn:
    raise Interrupted(signal.Signals(signum).name)


@contextmanager
def cleanup_on_signals() -> Iterator[None]:
    """
    Turn SIGINT, SIGTERM and SIGHUP into exceptions while active, so C{finally} blocks run.

    SIGINT is handled even when the script was started with it ignored (a background job of a
    non-interactive shell), so that C{kill -INT} always cleans up.
    """
    previous = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGTERM, signal.SIGHUP)}
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
