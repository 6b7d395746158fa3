"""Token buckets for requests/min and tokens/min, shared by all workers of one run, plus a global cool-down that a
429's `retry-after` imposes on every worker (one rate-limited request means all of them would be)."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """Refills `rate_per_min / 60` units per second up to `capacity`; `acquire(n)` waits until n units are there.

    The bucket starts with a small burst (`burst_s` seconds' worth) rather than a full minute's worth: a provider
    that enforces its limit over shorter windows would otherwise answer the opening burst with 429s."""

    def __init__(self, rate_per_min: float, burst_s: float = 2.0):
        self.rate = rate_per_min / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self.level = self.capacity
        self.t = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.t) * self.rate)
        self.t = now

    def wait_time(self, n: float) -> float:
        self._refill()
        n = min(n, self.capacity)  # a single request larger than the burst still goes, alone
        return 0.0 if self.level >= n else (n - self.level) / self.rate

    def take(self, n: float) -> None:
        self._refill()
        self.level -= min(n, self.capacity)


class RateLimiter:
    """requests/min and tokens/min buckets behind one lock, so concurrent workers are admitted in order."""

    def __init__(self, rpm: float | None, tpm: float | None):
        self.rpm = TokenBucket(rpm) if rpm else None
        self.tpm = TokenBucket(tpm) if tpm else None
        self._lock = asyncio.Lock()
        self._cool_until = 0.0

    def cool_down(self, seconds: float) -> None:
        """Hold every worker back for `seconds` (a 429 with retry-after)."""
        self._cool_until = max(self._cool_until, time.monotonic() + seconds)

    async def acquire(self, tokens: int) -> None:
        async with self._lock:
            while True:
                wait = max(0.0, self._cool_until - time.monotonic())
                if self.rpm:
                    wait = max(wait, self.rpm.wait_time(1))
                if self.tpm:
                    wait = max(wait, self.tpm.wait_time(tokens))
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            if self.rpm:
                self.rpm.take(1)
            if self.tpm:
                self.tpm.take(tokens)
