from __future__ import annotations

import asyncio
import threading

import keyring
import keyring.backends.fail
import keyring.errors
import pytest

from desktop_proxy.config.secrets import (
    SERVICE,
    SecretResolver,
    delete_secret,
    describe_ref,
    key_id,
    keyring_status,
    mask_secret,
    parse_ref,
    ref_problem,
    store_secret,
)
from desktop_proxy.errors import SecretError
from tests.memory_keyring import MemoryKeyring

WHERE = "providers[0].apiKeys[0]"


@pytest.fixture
def no_keyring() -> None:
    """Install keyring's own 'fail' backend, as on headless Linux (restored by memory_keyring)."""
    keyring.set_keyring(keyring.backends.fail.Keyring())


# --- references -------------------------------------------------------------------------------


def test_parse_ref_kinds() -> None:
    """References split into literal, env and keyring kinds."""
    assert parse_ref("sk-abc") == parse_ref("sk-abc")
    assert (parse_ref("sk-abc").kind, parse_ref("sk-abc").value) == ("literal", "sk-abc")
    assert (parse_ref("env:X").kind, parse_ref("env:X").value) == ("env", "X")
    assert (parse_ref("keyring:openai").kind, parse_ref("keyring:openai").value) == (
        "keyring",
        "openai",
    )


@pytest.mark.parametrize(
    ("ref", "fragment"),
    [
        ("env:", "needs a variable name"),
        ("env:MY-KEY", "not a valid environment variable name"),
        ("keyring:", "needs an entry name"),
        ("ENV:OPENAI_API_KEY", "misspelt 'env:'"),
        ("Keyring:openai", "misspelt 'keyring:'"),
        ("", "is empty"),
        (" sk-abc", "whitespace"),
    ],
)
def test_ref_problem_reports_bad_syntax(ref: str, fragment: str) -> None:
    """Malformed references are described without echoing a literal key."""
    problem = ref_problem(ref)
    assert problem is not None
    assert fragment in problem


def test_ref_problem_accepts_good_refs() -> None:
    """Well-formed literal, env and keyring references have no problem."""
    for ref in ("sk-abc123", "env:OPENAI_API_KEY", "keyring:openai work"):
        assert ref_problem(ref) is None


# --- resolution -------------------------------------------------------------------------------


async def test_literal_is_returned_as_is() -> None:
    """A literal reference resolves to itself."""
    assert await SecretResolver(environ={}).resolve("sk-literal") == "sk-literal"


async def test_env_reference_reads_the_environment() -> None:
    """env:NAME resolves to the variable's value."""
    resolver = SecretResolver(environ={"OPENAI_API_KEY": "sk-from-env"})
    assert await resolver.resolve("env:OPENAI_API_KEY", WHERE) == "sk-from-env"


async def test_env_reference_is_read_each_time() -> None:
    """A changed environment variable is picked up without invalidate()."""
    environ = {"K": "one"}
    resolver = SecretResolver(environ=environ)
    assert await resolver.resolve("env:K") == "one"
    environ["K"] = "two"
    assert await resolver.resolve("env:K") == "two"


async def test_missing_env_var_names_variable_and_reference() -> None:
    """An unset variable is a SecretError naming the variable and where it is referenced."""
    with pytest.raises(SecretError) as info:
        await SecretResolver(environ={}).resolve("env:OPENAI_API_KEY", WHERE)
    assert str(info.value) == (
        "environment variable OPENAI_API_KEY is not set (referenced by providers[0].apiKeys[0])"
    )


async def test_empty_env_var_is_an_error() -> None:
    """A variable set to an empty string is reported as empty."""
    with pytest.raises(SecretError, match="OPENAI_API_KEY is empty"):
        await SecretResolver(environ={"OPENAI_API_KEY": " "}).resolve("env:OPENAI_API_KEY")


async def test_malformed_reference_is_a_secret_error() -> None:
    """A malformed reference fails with a SecretError naming where it is used."""
    with pytest.raises(SecretError, match=r"invalid secret reference \(referenced by x\)"):
        await SecretResolver(environ={}).resolve("env:", "x")


async def test_keyring_read_runs_off_the_event_loop(memory_keyring: MemoryKeyring) -> None:
    """keyring:ENTRY reads the desktop-proxy service in a worker thread, not the loop's."""
    memory_keyring.passwords[(SERVICE, "openai")] = "sk-from-keyring"
    value = await SecretResolver().resolve("keyring:openai", WHERE)
    assert value == "sk-from-keyring"
    assert memory_keyring.read_threads
    assert threading.get_ident() not in memory_keyring.read_threads


async def test_keyring_values_are_cached_until_invalidated(memory_keyring: MemoryKeyring) -> None:
    """A keyring value is read once, and again only after invalidate()."""
    memory_keyring.passwords[(SERVICE, "openai")] = "sk-1"
    resolver = SecretResolver()
    assert await resolver.resolve("keyring:openai") == "sk-1"
    memory_keyring.passwords[(SERVICE, "openai")] = "sk-2"
    assert await resolver.resolve("keyring:openai") == "sk-1"
    assert memory_keyring.reads == 1
    resolver.invalidate()
    assert await resolver.resolve("keyring:openai") == "sk-2"
    assert memory_keyring.reads == 2


async def test_invalidate_one_reference(memory_keyring: MemoryKeyring) -> None:
    """invalidate(ref) forgets only that entry."""
    memory_keyring.passwords[(SERVICE, "a")] = "A1"
    memory_keyring.passwords[(SERVICE, "b")] = "B1"
    resolver = SecretResolver()
    await resolver.resolve("keyring:a")
    await resolver.resolve("keyring:b")
    memory_keyring.passwords[(SERVICE, "a")] = "A2"
    memory_keyring.passwords[(SERVICE, "b")] = "B2"
    resolver.invalidate("keyring:a")
    assert await resolver.resolve("keyring:a") == "A2"
    assert await resolver.resolve("keyring:b") == "B1"


async def test_concurrent_resolves_share_one_read(memory_keyring: MemoryKeyring) -> None:
    """Requests arriving while a keyring read is pending wait for it instead of re-reading."""
    memory_keyring.passwords[(SERVICE, "openai")] = "sk-shared"
    memory_keyring.gate.clear()
    resolver = SecretResolver()
    tasks = [asyncio.create_task(resolver.resolve("keyring:openai")) for _ in range(5)]
    await asyncio.sleep(0.05)
    memory_keyring.gate.set()
    assert await asyncio.gather(*tasks) == ["sk-shared"] * 5
    assert memory_keyring.reads == 1


async def test_cancelled_waiter_does_not_cancel_the_read(memory_keyring: MemoryKeyring) -> None:
    """One caller giving up leaves the shared keyring read running for the others."""
    memory_keyring.passwords[(SERVICE, "openai")] = "sk-x"
    memory_keyring.gate.clear()
    resolver = SecretResolver()
    first = asyncio.create_task(resolver.resolve("keyring:openai"))
    second = asyncio.create_task(resolver.resolve("keyring:openai"))
    await asyncio.sleep(0.05)
    first.cancel()
    memory_keyring.gate.set()
    assert await second == "sk-x"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_missing_keyring_entry(memory_keyring: MemoryKeyring) -> None:
    """An absent keyring entry names the entry, the reference and how to store it."""
    with pytest.raises(SecretError) as info:
        await SecretResolver().resolve("keyring:openai", WHERE)
    message = str(info.value)
    assert "keyring entry 'openai'" in message
    assert WHERE in message
    assert "keyring set desktop-proxy openai" in message


async def test_failed_read_is_not_cached(memory_keyring: MemoryKeyring) -> None:
    """After a failed keyring read, a later resolve tries the keyring again."""
    resolver = SecretResolver()
    with pytest.raises(SecretError):
        await resolver.resolve("keyring:openai")
    memory_keyring.passwords[(SERVICE, "openai")] = "sk-now"
    assert await resolver.resolve("keyring:openai") == "sk-now"


@pytest.mark.usefixtures("no_keyring")
async def test_no_keyring_backend_says_so_and_suggests_env() -> None:
    """With keyring's fail backend, the error says no OS keyring exists and suggests env:NAME."""
    with pytest.raises(SecretError) as info:
        await SecretResolver().resolve("keyring:openai", WHERE)
    message = str(info.value)
    assert "keyring entry 'openai'" in message
    assert "no OS keyring is available" in message
    assert "env:OPENAI_API_KEY" in message
    assert WHERE in message


@pytest.mark.usefixtures("no_keyring")
async def test_env_and_literal_keep_working_without_keyring() -> None:
    """Without a keyring backend, env and literal references still resolve."""
    resolver = SecretResolver(environ={"K": "v"})
    assert await resolver.resolve("env:K") == "v"
    assert await resolver.resolve("sk-lit") == "sk-lit"


async def test_locked_keyring(memory_keyring: MemoryKeyring) -> None:
    """A locked keyring is reported as locked."""
    memory_keyring.error = keyring.errors.KeyringLocked("locked")
    with pytest.raises(SecretError, match="locked"):
        await SecretResolver().resolve("keyring:openai")


def test_resolve_blocking(memory_keyring: MemoryKeyring) -> None:
    """resolve_blocking resolves all three kinds synchronously and shares the cache."""
    memory_keyring.passwords[(SERVICE, "openai")] = "sk-k"
    resolver = SecretResolver(environ={"K": "v"})
    assert resolver.resolve_blocking("lit") == "lit"
    assert resolver.resolve_blocking("env:K") == "v"
    assert resolver.resolve_blocking("keyring:openai") == "sk-k"
    assert resolver.resolve_blocking("keyring:openai") == "sk-k"
    assert memory_keyring.reads == 1
    with pytest.raises(SecretError, match=r"not set \(referenced by here\)"):
        resolver.resolve_blocking("env:NOPE", "here")


# --- keyring management -----------------------------------------------------------------------


def test_keyring_status_available() -> None:
    """A working backend is reported available, with its name."""
    status = keyring_status()
    assert status.available
    assert "MemoryKeyring" in status.backend


@pytest.mark.usefixtures("no_keyring")
def test_keyring_status_unavailable() -> None:
    """keyring's fail backend is reported unavailable with a message pointing to env:NAME."""
    status = keyring_status()
    assert not status.available
    assert status.backend == "keyring.backends.fail.Keyring"
    assert "No OS keyring" in status.message
    assert "env:NAME" in status.message


def test_store_and_delete_secret(memory_keyring: MemoryKeyring) -> None:
    """store_secret writes under the desktop-proxy service; delete_secret removes it."""
    store_secret("openai", "sk-stored")
    assert memory_keyring.passwords[(SERVICE, "openai")] == "sk-stored"
    assert SecretResolver().resolve_blocking("keyring:openai") == "sk-stored"
    delete_secret("openai")
    assert (SERVICE, "openai") not in memory_keyring.passwords


def test_delete_missing_secret() -> None:
    """Deleting an entry that does not exist is a SecretError naming it."""
    with pytest.raises(SecretError, match="'nope' not found"):
        delete_secret("nope")


def test_store_rejects_bad_input() -> None:
    """Empty secrets and blank entry names are refused."""
    with pytest.raises(SecretError):
        store_secret("openai", "")
    with pytest.raises(SecretError):
        store_secret(" ", "sk")


@pytest.mark.usefixtures("no_keyring")
def test_store_without_keyring() -> None:
    """Storing with no keyring backend says so."""
    with pytest.raises(SecretError, match="no OS keyring is available"):
        store_secret("openai", "sk-x")


# --- display ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("sk-abcdefghijklmnopqrstuvwxyz1234", "sk-…1234"),
        ("sk-proj-abcdefghijklmnopqrst9876", "sk-proj-…9876"),
        ("sk-ant-api03-abcdefghijklmnop4321", "sk-ant-…4321"),
        ("AIzaSyAbcdefghijklmnopqrstuv5555", "…5555"),
        ("short", "…"),
        ("", "(empty)"),
    ],
)
def test_mask_secret(value: str, masked: str) -> None:
    """Masked keys show at most a vendor prefix and the last four characters."""
    assert mask_secret(value) == masked


def test_mask_secret_never_shows_more_than_four_trailing_chars() -> None:
    """Whatever the key, the masked form after the ellipsis has at most four characters."""
    for value in ("x" * 12, "abcd-efgh-ijkl-mnop", "dp-" + "z" * 40, "0123456789abcdef"):
        masked = mask_secret(value)
        assert len(masked.split("…", 1)[1]) <= 4
        assert len(masked) < len(value)


def test_describe_ref() -> None:
    """env: and keyring: references are shown as is; literal keys are masked."""
    assert describe_ref("env:OPENAI_API_KEY") == "env:OPENAI_API_KEY"
    assert describe_ref("keyring:openai") == "keyring:openai"
    assert describe_ref("sk-abcdefghijklmnop1234") == "sk-…1234"


def test_key_id() -> None:
    """key_id is the last four characters, and nothing for keys too short to reveal."""
    assert key_id("sk-abcdefghijklmnop1234") == "1234"
    assert key_id("tiny") == "…"
