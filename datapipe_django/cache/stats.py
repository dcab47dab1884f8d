"""Counters of the cache's users."""

from __future__ import annotations

import threading

__all__ = ["CacheStats"]


class CacheStats:
    """Counters of one :class:`CachedFetcher` (thread-safe): ``hits``, ``stale`` (stale copies
    served), ``misses`` (computed and stored), ``waits`` (hits after waiting for another
    caller), ``bypasses`` (answered without the cache) and ``errors`` (cache errors)."""

    NAMES = ("hits", "stale", "misses", "waits", "bypasses", "errors")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(self.NAMES, 0)

    def incr(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def __getitem__(self, name: str) -> int:
        return self._counts[name]

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts = dict.fromkeys(self.NAMES, 0)

    def __repr__(self) -> str:
        return f"CacheStats({self.as_dict()})"
