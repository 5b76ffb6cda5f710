"""
Failed-login throttling, per account and per client address.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from quayd.errors import TooManyRequests


@dataclass(slots=True)
class _Record:
    failures: int
    first_at: float
    locked_until: float


class LoginThrottle:
    """
    After C{max_failures} failed logins within C{window} seconds for one
    account or one client address, further attempts are refused (429 with
    C{Retry-After}) for a lockout that doubles with each further failure, up to
    C{max_lockout} seconds. A success clears the account's record.
    """

    def __init__(
        self,
        clock: IReactorTime,
        max_failures: int = 5,
        window: float = 60.0,
        lockout: float = 2.0,
        max_lockout: float = 300.0,
        max_entries: int = 100_000,
    ) -> None:
        self._clock = clock
        self.clock = clock
        self._max_failures = max_failures
        self._window = window
        self._lockout = lockout
        self._max_lockout = max_lockout
        self._max_entries = max_entries
        self._records: dict[str, _Record] = {}

    def _keys(self, account: str | None, client: str) -> list[str]:
        keys = [f"client:{client}"]
        if account:
            keys.append(f"account:{account}")
        return keys

    def check(self, account: str | None, client: str) -> None:
        """
        @raise TooManyRequests: If the account or the client is locked out.
        """
        now = self._clock.seconds()
        for key in self._keys(account, client):
            record = self._records.get(key)
            if record is not None and record.locked_until > now:
                wait = max(1, math.ceil(record.locked_until - now))
                raise TooManyRequests(
                    "too many failed logins; retry later", headers={"Retry-After": str(wait)}
                )

    def failed(self, account: str | None, client: str) -> None:
        """Count a failed login."""
        now = self._clock.seconds()
        if len(self._records) >= self._max_entries:
            self._prune(now)
        for key in self._keys(account, client):
            record = self._records.get(key)
            if record is None or (now - record.first_at > self._window and record.locked_until <= now):
                record = self._records[key] = _Record(0, now, 0.0)
            record.failures += 1
            excess = record.failures - self._max_failures
            if excess >= 0:
                record.locked_until = now + min(self._max_lockout, self._lockout * 2**excess)

    def succeeded(self, account: str | None, client: str) -> None:
        """Clear the account's record after a successful login."""
        if account:
            self._records.pop(f"account:{account}", None)

    def _prune(self, now: float) -> None:
        for key in [
            k for k, r in self._records.items() if r.locked_until <= now and now - r.first_at > self._window
        ]:
            del self._records[key]
