"""Timing HTTP endpoints through the real WSGI stack (Flask's test client: routing, argument
parsing, the view, serialisation, the streamed body read to the end), and profiling a slow one."""
from __future__ import annotations

import cProfile
import io
import pstats
import statistics
import time


def timed_get(client, url: str) -> float:
    """Seconds for one GET including reading the whole (possibly streamed) body; must be 200."""
    return timed_get_body(client, url)[0]


def timed_get_body(client, url: str) -> tuple[float, bytes]:
    """(seconds, body) of one GET, the whole (possibly streamed) body read; must be 200."""
    started = time.perf_counter()
    response = client.get(url)
    body = response.get_data()
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"GET {url}: {response.status_code} {body[:300]!r}")
    response.close()
    return elapsed, body


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def profile_get(client, url: str, top: int = 12) -> str:
    """Where one GET spends its time: the top functions by own time (cProfile)."""
    profile = cProfile.Profile()
    profile.enable()
    response = client.get(url)
    response.get_data()
    profile.disable()
    response.close()
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    # Keep the header with the total and the table; drop pstats' preamble lines.
    keep = [line for line in lines if "function calls" in line or line.lstrip()[:1].isdigit() or "ncalls" in line]
    return "\n".join(keep)


def peak_rss_growth(action):
    """(bytes the process's peak RSS rose above its RSS before, action's result), on Linux.

    Writing 5 to /proc/self/clear_refs resets the peak (VmHWM) to the current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kib("VmRSS")
    result = action()
    return (_status_kib("VmHWM") - before) * 1024, result


def _status_kib(field: str) -> int:
    """A kB field of /proc/self/status."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")
