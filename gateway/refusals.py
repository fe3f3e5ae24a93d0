"""Refused attempts of the last hour, by sensor and by source address, for the operators' page.

This module owns `RefusalLog`: counts of refused requests (4.01, 4.03, …) in one-minute buckets
for an hour, per sensor id (when the request came through a known context) and per source
address. Memory is bounded: an hour of buckets, each with at most `KEYS_PER_BUCKET` distinct
sensors or addresses (a flood from many addresses is counted under "(other)"). Written on the
gateway's event loop, read from web threads, hence the lock.
"""
from __future__ import annotations

import collections
import threading
import time

HORIZON = 3600  # seconds: "the last hour"
BUCKET = 60
KEYS_PER_BUCKET = 5_000
OTHER = "(other)"


class RefusalLog:
    """Refusals per (sensor or address, code) over the last hour."""

    def __init__(self, horizon: int = HORIZON, bucket: int = BUCKET, keys_per_bucket: int = KEYS_PER_BUCKET):
        self.horizon = horizon
        self.bucket = bucket
        self.keys_per_bucket = keys_per_bucket
        self._buckets: collections.deque[tuple[int, collections.Counter]] = collections.deque()
        self._lock = threading.Lock()

    def add(self, code: str, sensor: str | None, source: str | None, now: float | None = None) -> None:
        """Count one refusal (event loop)."""
        start = int((time.time() if now is None else now) // self.bucket) * self.bucket
        with self._lock:
            if not self._buckets or self._buckets[-1][0] != start:
                self._buckets.append((start, collections.Counter()))
                while self._buckets and self._buckets[0][0] <= start - self.horizon:
                    self._buckets.popleft()
            counts = self._buckets[-1][1]
            for kind, name in (("sensor", sensor), ("source", source)):
                if name is None:
                    continue
                key = (kind, name, code)
                if key not in counts and len(counts) >= self.keys_per_bucket:
                    key = (kind, OTHER, code)
                counts[key] += 1

    def summary(self, now: float | None = None) -> dict[str, list[dict]]:
        """{"by_sensor": [...], "by_source": [...]}: per name its counts by code, most refused first."""
        since = (time.time() if now is None else now) - self.horizon
        total: collections.Counter = collections.Counter()
        with self._lock:
            for start, counts in self._buckets:
                if start + self.bucket > since:
                    total.update(counts)
        rows: dict[tuple[str, str], dict] = {}
        for (kind, name, code), count in total.items():
            row = rows.setdefault((kind, name), {"name": name, "total": 0, "codes": {}})
            row["codes"][code] = row["codes"].get(code, 0) + count
            row["total"] += count
        result = {"by_sensor": [], "by_source": []}
        for (kind, _), row in sorted(rows.items(), key=lambda item: -item[1]["total"]):
            result["by_" + kind].append(row)
        return result


def source_host(remote) -> str | None:
    """The sender's IP address as text, without formatting the whole address (cheap)."""
    sockaddr = getattr(remote, "sockaddr", None)
    if not sockaddr:
        return None
    host = sockaddr[0]
    return host[7:] if host.startswith("::ffff:") else host
