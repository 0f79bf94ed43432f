"""Per-key and per-provider cooldowns: the memory behind rotation and failover."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

Clock = Callable[[], float]


@dataclass(slots=True)
class Cooldown:
    until: float
    reason: str


@dataclass
class HealthBook:
    """Remembers which (provider, key) pairs failed recently and when they may be tried again.

    Failures are only counted for the main API routes; auxiliary calls like count_tokens never
    bench a provider (a 404 there says nothing about chat).
    """

    default_cooldown: float = 60.0
    clock: Clock = time.monotonic
    _keys: dict[tuple[str, int], Cooldown] = field(default_factory=dict)
    _providers: dict[str, Cooldown] = field(default_factory=dict)
    _next_key: dict[str, int] = field(default_factory=dict)
    listeners: list[Callable[[str, bool, str], None]] = field(default_factory=list)

    def key_order(self, provider: str, key_count: int) -> list[int]:
        """Key indices to try, round-robin, with cooling keys moved to the end."""
        if key_count <= 1:
            return list(range(key_count))
        start = self._next_key.get(provider, 0) % key_count
        self._next_key[provider] = start + 1
        order = [(start + i) % key_count for i in range(key_count)]
        ready = [i for i in order if not self.key_cooling(provider, i)]
        cooling = [i for i in order if self.key_cooling(provider, i)]
        return ready + cooling

    def key_cooling(self, provider: str, index: int) -> bool:
        c = self._keys.get((provider, index))
        return c is not None and c.until > self.clock()

    def provider_cooling(self, provider: str) -> bool:
        c = self._providers.get(provider)
        if c is None:
            return False
        if c.until > self.clock():
            return True
        del self._providers[provider]
        self._notify(provider, True, "cooldown over")
        return False

    def fail_key(
        self, provider: str, index: int, reason: str, seconds: float | None = None
    ) -> None:
        self._keys[(provider, index)] = Cooldown(
            self.clock() + (seconds if seconds is not None else self.default_cooldown), reason
        )

    def fail_provider(self, provider: str, reason: str, seconds: float | None = None) -> None:
        was_cooling = provider in self._providers
        self._providers[provider] = Cooldown(
            self.clock() + (seconds if seconds is not None else self.default_cooldown), reason
        )
        if not was_cooling:
            self._notify(provider, False, reason)

    def succeed(self, provider: str, index: int) -> None:
        self._keys.pop((provider, index), None)
        if self._providers.pop(provider, None) is not None:
            self._notify(provider, True, "recovered")

    def cooling_providers(self) -> dict[str, str]:
        now = self.clock()
        return {name: c.reason for name, c in self._providers.items() if c.until > now}

    def _notify(self, provider: str, healthy: bool, reason: str) -> None:
        for listener in list(self.listeners):
            listener(provider, healthy, reason)


def retry_after_seconds(value: str | None, ms_value: str | None = None) -> float | None:
    """Parse `retry-after-ms` / `retry-after` (seconds only; HTTP dates fall back to default)."""
    for raw, scale in ((ms_value, 0.001), (value, 1.0)):
        if raw:
            try:
                return max(0.0, float(raw) * scale)
            except ValueError:
                continue
    return None
