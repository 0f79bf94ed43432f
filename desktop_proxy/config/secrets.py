"""Secret references and their resolution.

A secret reference (provider `apiKey(s)`, access keys) is one of:

- a literal key, used as is;
- `env:NAME`, read from the environment variable NAME when needed;
- `keyring:ENTRY`, read from the OS keyring (service `desktop-proxy`, username ENTRY).

Keyring reads can block for a long time (the OS may prompt to unlock the keychain), so the
async path runs them in a worker thread and caches the result; the event loop is also the UI
thread. Where no keyring backend works (headless Linux), errors say so and point to `env:NAME`.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import keyring
import keyring.backends.fail
import keyring.errors

from desktop_proxy.errors import SecretError

SERVICE = "desktop-proxy"
ENV_PREFIX = "env:"
KEYRING_PREFIX = "keyring:"

SecretKind = Literal["literal", "env", "keyring"]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Short vendor prefixes worth showing in a masked key: sk-, sk-ant-, sk-proj-, gsk_, dp- ...
_KEY_PREFIX = re.compile(r"(?:[A-Za-z]{2,6}[-_]){1,2}")
# Below this length even the last four characters give away too much of the key.
_MIN_REVEAL_LEN = 12


@dataclass(frozen=True, slots=True)
class SecretRef:
    kind: SecretKind
    # The literal key, the environment variable name, or the keyring entry.
    value: str


@dataclass(frozen=True, slots=True)
class KeyringStatus:
    available: bool
    backend: str
    message: str


def parse_ref(ref: str) -> SecretRef:
    """Split a reference into its kind and value (no validation; see `ref_problem`)."""
    if ref.startswith(ENV_PREFIX):
        return SecretRef("env", ref[len(ENV_PREFIX) :])
    if ref.startswith(KEYRING_PREFIX):
        return SecretRef("keyring", ref[len(KEYRING_PREFIX) :])
    return SecretRef("literal", ref)


def ref_problem(ref: str) -> str | None:
    """What is wrong with a reference's syntax, or None. Never echoes a literal key."""
    parsed = parse_ref(ref)
    if parsed.kind == "env":
        if not parsed.value:
            return "'env:' needs a variable name, e.g. 'env:OPENAI_API_KEY'"
        if not _ENV_NAME.match(parsed.value):
            return f"'{ref}' is not a valid environment variable name (letters, digits, _)"
        return None
    if parsed.kind == "keyring":
        if not parsed.value.strip():
            return "'keyring:' needs an entry name, e.g. 'keyring:openai'"
        if parsed.value != parsed.value.strip():
            return f"keyring entry in '{ref}' has leading or trailing whitespace"
        return None
    if not ref:
        return "is empty"
    lowered = ref.lower()
    for prefix in (ENV_PREFIX, KEYRING_PREFIX):
        if lowered.startswith(prefix) or lowered.startswith(prefix.replace(":", " :")):
            return f"looks like a misspelt '{prefix}' reference (prefixes are lower case)"
    if ref != ref.strip():
        return "literal key has leading or trailing whitespace"
    if any(c.isspace() for c in ref):
        return "literal key contains whitespace"
    return None


@functools.lru_cache(maxsize=256)
def _check_ref(ref: str) -> SecretRef | str:
    """The parsed reference, or what is wrong with it. Cached: it runs on every request."""
    problem = ref_problem(ref)
    return problem if problem is not None else parse_ref(ref)


def _referenced_by(where: str) -> str:
    return f" (referenced by {where})" if where else ""


class _KeyringFailure(Exception):
    """A keyring read failed; the message is completed with the caller's `where`."""

    def __init__(self, entry: str, reason: str, hint: str) -> None:
        super().__init__(reason)
        self.entry = entry
        self.reason = reason
        self.hint = hint

    def to_secret_error(self, where: str) -> SecretError:
        return SecretError(
            f"cannot read keyring entry '{self.entry}'{_referenced_by(where)}: "
            f"{self.reason}. {self.hint}"
        )


def _no_keyring_hint(entry: str) -> str:
    env = re.sub(r"[^A-Za-z0-9_]", "_", entry).upper() or "NAME"
    if env[0].isdigit():
        env = "_" + env
    env = env if env.endswith("KEY") else env + "_API_KEY"
    return f"Put the key in an environment variable instead and refer to it as 'env:{env}'."


def _backend_name(backend: object) -> str:
    cls = type(backend)
    return f"{cls.__module__}.{cls.__qualname__}"


def _read_keyring(service: str, entry: str) -> str:
    """Blocking keyring read; raises _KeyringFailure."""
    try:
        value = keyring.get_password(service, entry)
    except keyring.errors.NoKeyringError as exc:
        raise _KeyringFailure(entry, "no OS keyring is available", _no_keyring_hint(entry)) from exc
    except keyring.errors.KeyringLocked as exc:
        raise _KeyringFailure(
            entry, "the OS keyring is locked", "Unlock it and try again."
        ) from exc
    except Exception as exc:  # backends raise D-Bus, Win32 and Security-framework errors too
        raise _KeyringFailure(
            entry, f"{type(exc).__name__}: {exc}", _no_keyring_hint(entry)
        ) from exc
    if value is None:
        raise _KeyringFailure(
            entry,
            f"no such entry in the OS keyring (service '{service}')",
            f"Store it with `keyring set {service} {entry}`, or use 'env:NAME'.",
        )
    return value


class SecretResolver:
    """Turns secret references into secret values. One per running gateway.

    Keyring values are cached until `invalidate()`; environment variables are read each time
    (cheap, and a changed variable is picked up). Literal keys are returned as is.
    """

    def __init__(self, *, environ: Mapping[str, str] | None = None, service: str = SERVICE) -> None:
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._service = service
        self._cache: dict[str, str] = {}
        self._inflight: dict[str, asyncio.Future[str]] = {}
        self._generation = 0
        self._lock = threading.Lock()

    async def resolve(self, ref: str, where: str = "") -> str:
        """The secret `ref` stands for; keyring reads run off the event loop.

        Raises:
            SecretError: the reference is malformed, the variable is unset, or the keyring
                entry cannot be read. `where` (e.g. "providers[0].apiKeys[1]") is named.
        """
        parsed = self._checked(ref, where)
        if parsed.kind != "keyring":
            return self._resolve_simple(parsed, where)
        entry = parsed.value
        cached = self._cache.get(entry)
        if cached is not None:
            return cached
        future = self._inflight.get(entry)
        if future is None or future.get_loop() is not asyncio.get_running_loop():
            future = asyncio.ensure_future(asyncio.to_thread(self._read_and_cache, entry))
            self._inflight[entry] = future
            future.add_done_callback(self._forget_inflight(entry))
        try:
            # shield: one caller giving up must not cancel the read others are waiting for.
            return await asyncio.shield(future)
        except _KeyringFailure as exc:
            raise exc.to_secret_error(where) from None

    def resolve_blocking(self, ref: str, where: str = "") -> str:
        """Like `resolve`, for synchronous callers (CLI); may block on the keyring."""
        parsed = self._checked(ref, where)
        if parsed.kind != "keyring":
            return self._resolve_simple(parsed, where)
        cached = self._cache.get(parsed.value)
        if cached is not None:
            return cached
        try:
            return self._read_and_cache(parsed.value)
        except _KeyringFailure as exc:
            raise exc.to_secret_error(where) from None

    def invalidate(self, ref: str | None = None) -> None:
        """Forget cached keyring values: all of them, or the one `ref` points to."""
        with self._lock:
            self._generation += 1
            if ref is None:
                self._cache.clear()
                return
            parsed = parse_ref(ref)
            if parsed.kind == "keyring":
                self._cache.pop(parsed.value, None)

    def _checked(self, ref: str, where: str) -> SecretRef:
        checked = _check_ref(ref)
        if isinstance(checked, str):
            raise SecretError(f"invalid secret reference{_referenced_by(where)}: {checked}")
        return checked

    def _resolve_simple(self, parsed: SecretRef, where: str) -> str:
        if parsed.kind == "literal":
            return parsed.value
        value = self._environ.get(parsed.value)
        if value is None:
            raise SecretError(
                f"environment variable {parsed.value} is not set{_referenced_by(where)}"
            )
        if not value.strip():
            raise SecretError(
                f"environment variable {parsed.value} is empty{_referenced_by(where)}"
            )
        return value.strip()

    def _read_and_cache(self, entry: str) -> str:
        with self._lock:
            generation = self._generation
        value = _read_keyring(self._service, entry)
        with self._lock:
            # A value read before an invalidate() may be stale: hand it out, but do not keep it.
            if generation == self._generation:
                self._cache[entry] = value
        return value

    def _forget_inflight(self, entry: str) -> Callable[[asyncio.Future[str]], None]:
        def done(future: asyncio.Future[str]) -> None:
            if self._inflight.get(entry) is future:
                del self._inflight[entry]
            if not future.cancelled():
                future.exception()  # retrieved, so an unawaited failure is not logged

        return done


def keyring_status() -> KeyringStatus:
    """Whether an OS keyring backend works here. Blocking: run it off the event loop."""
    try:
        backend = keyring.get_keyring()
    except Exception as exc:
        return KeyringStatus(False, "unknown", f"The OS keyring could not be initialised: {exc}")
    name = _backend_name(backend)
    if isinstance(backend, keyring.backends.fail.Keyring):
        return KeyringStatus(
            False,
            name,
            "No OS keyring is available on this system. Keep API keys in environment "
            "variables (apiKey: 'env:NAME') or, if you must, as plain text in the config.",
        )
    if type(backend).__module__ == "keyring.backends.null":
        return KeyringStatus(
            False, name, "The OS keyring is disabled (null backend); use 'env:NAME' keys."
        )
    return KeyringStatus(True, name, f"Keys can be stored in the OS keyring ({name}).")


def store_secret(entry: str, value: str, *, service: str = SERVICE) -> None:
    """Save `value` in the OS keyring under `entry` (blocking)."""
    _check_entry(entry)
    if not value:
        raise SecretError("refusing to store an empty secret")
    try:
        keyring.set_password(service, entry, value)
    except keyring.errors.NoKeyringError:
        raise SecretError(
            f"cannot store keyring entry '{entry}': no OS keyring is available. "
            + _no_keyring_hint(entry)
        ) from None
    except Exception as exc:
        raise SecretError(
            f"cannot store keyring entry '{entry}': {type(exc).__name__}: {exc}"
        ) from None


def delete_secret(entry: str, *, service: str = SERVICE) -> None:
    """Remove `entry` from the OS keyring (blocking); SecretError if it is not there."""
    _check_entry(entry)
    try:
        keyring.delete_password(service, entry)
    except keyring.errors.NoKeyringError:
        raise SecretError(
            f"cannot delete keyring entry '{entry}': no OS keyring is available"
        ) from None
    except keyring.errors.PasswordDeleteError:
        raise SecretError(
            f"keyring entry '{entry}' not found in the OS keyring (service '{service}')"
        ) from None
    except Exception as exc:
        raise SecretError(
            f"cannot delete keyring entry '{entry}': {type(exc).__name__}: {exc}"
        ) from None


def _check_entry(entry: str) -> None:
    if not entry or entry != entry.strip():
        raise SecretError(f"invalid keyring entry name {entry!r}")


def mask_secret(value: str) -> str:
    """A display form of a key: a vendor prefix and at most the last four characters."""
    if not value:
        return "(empty)"
    if len(value) < _MIN_REVEAL_LEN:
        return "…"
    match = _KEY_PREFIX.match(value)
    prefix = match.group(0) if match and len(value) - match.end() >= 8 else ""
    return f"{prefix}…{value[-4:]}"


def describe_ref(ref: str) -> str:
    """A reference safe to show: `env:` and `keyring:` references as is, literals masked."""
    parsed = parse_ref(ref)
    if parsed.kind == "literal":
        return mask_secret(ref)
    return ref


def key_id(value: str) -> str:
    """A short identifier for a key in logs and history: its last four characters."""
    if len(value) < _MIN_REVEAL_LEN:
        return "…"
    return value[-4:]
