"""An in-memory keyring backend, so tests never touch the OS keyring."""

from __future__ import annotations

import threading

from keyring.backend import KeyringBackend
from keyring.compat import properties
from keyring.errors import PasswordDeleteError


class MemoryKeyring(KeyringBackend):
    """Stores passwords in a dict; counts reads and can hold them until released.

    Its priority raises, so keyring never picks it by itself: tests install it with
    `keyring.set_keyring(...)`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.passwords: dict[tuple[str, str], str] = {}
        self.reads = 0
        self.read_threads: list[int] = []
        # When set, get_password raises it (e.g. keyring.errors.KeyringLocked()).
        self.error: Exception | None = None
        # When cleared, get_password waits for it: lets tests overlap concurrent reads.
        self.gate = threading.Event()
        self.gate.set()

    @properties.classproperty
    def priority(cls) -> float:
        raise RuntimeError("test-only backend; install it with keyring.set_keyring()")

    def get_password(self, service: str, username: str) -> str | None:
        self.reads += 1
        self.read_threads.append(threading.get_ident())
        if not self.gate.wait(timeout=10):
            raise TimeoutError("MemoryKeyring.gate was never opened")
        if self.error is not None:
            raise self.error
        return self.passwords.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.passwords[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        try:
            del self.passwords[(service, username)]
        except KeyError:
            raise PasswordDeleteError(f"{username} not found") from None
