"""Token buckets for requests/min and tokens/min, shared by all workers of one run, plus a global cool-down that a
429's `retry-after` imposes on every worker (one rate-limited request means all of them would be)."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """Refills `rate_per_min / 60` units per second up to `capacity`; `acquire(n)` waits until n units are there.

    The bucket holds half a second's worth rather than a minute's worth: providers may enforce a per-minute limit
    over windows as short as a second (OpenAI documents this); a burst smaller than the provider's leaves room for
    requests that reach it bunched up by network and scheduling delays (up to `burst_s`), so none is refused."""

    def __init__(self, rate_per_min: float, burst_s: float = 0.5):
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
        need = min(n, self.capacity)  # a request larger than the burst goes once the bucket is full...
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def take(self, n: float) -> None:
        self._refill()
        self.level -= n  # ...and leaves it in debt, so the long-run rate never exceeds the limit


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
