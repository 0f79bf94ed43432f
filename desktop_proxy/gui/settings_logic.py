"""The settings window's decisions, without widgets: validation, key naming, pickers' contents."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from desktop_proxy.config.loader import dump_config, parse_config
from desktop_proxy.config.models import AppConfig, ProviderConfig
from desktop_proxy.config.presets import Preset
from desktop_proxy.config.secrets import KEYRING_PREFIX, mask_secret, parse_ref
from desktop_proxy.errors import ConfigError

_PATH = re.compile(r"^(?P<path>[^:]+?): (?P<message>.*)$", re.S)
_INDEX = re.compile(r"^(?P<section>\w+)\[(?P<index>\d+)\]")


@dataclass(frozen=True, slots=True)
class Problem:
    path: str  # e.g. "providers[1].baseUrl" or "(top level)"
    message: str

    @property
    def text(self) -> str:
        return f"{self.path}: {self.message}"

    @property
    def section(self) -> str:
        return re.split(r"[.\[]", self.path, maxsplit=1)[0]

    @property
    def index(self) -> int | None:
        match = _INDEX.match(self.path)
        return int(match.group("index")) if match else None

    @property
    def field(self) -> str:
        """The last key of the path: 'baseUrl' for 'providers[0].baseUrl'."""
        tail = _INDEX.sub("", self.path, count=1).lstrip(".")
        return tail.split(".", 1)[0].split("[", 1)[0] if tail else ""


def validate(config: AppConfig) -> list[Problem]:
    """The config loader's own verdict on the edited configuration."""
    try:
        parse_config(dump_config(config), "settings")
    except ConfigError as exc:
        return [split_problem(p) for p in exc.problems]
    return []


def split_problem(text: str) -> Problem:
    match = _PATH.match(text)
    if match is None:
        return Problem("(top level)", text)
    return Problem(match.group("path"), match.group("message"))


def problems_for(
    problems: Iterable[Problem], section: str, index: int | None = None
) -> list[Problem]:
    return [p for p in problems if p.section == section and (index is None or p.index == index)]


def describe_key(ref: str, pending: Mapping[str, str]) -> str:
    """How a key reference reads in the list: never the key itself."""
    parsed = parse_ref(ref)
    if parsed.kind == "keyring":
        value = pending.get(parsed.value)
        if value:
            return f"{mask_secret(value)} · to be saved in the OS keyring as '{parsed.value}'"
        return f"Stored in the OS keyring as '{parsed.value}'"
    if parsed.kind == "env":
        return f"Read from the environment variable {parsed.value}"
    return f"{mask_secret(ref)} · plain text in config.json"


def keyring_entry_name(prefix: str, name: str, taken: Iterable[str]) -> str:
    """A keyring entry for a new key: 'provider-openai', 'provider-openai-2', ..."""
    base = f"{prefix}-{re.sub(r'[^A-Za-z0-9._-]+', '-', name).strip('-') or 'key'}"
    used = set(taken)
    if base not in used:
        return base
    n = 2
    while f"{base}-{n}" in used:
        n += 1
    return f"{base}-{n}"


def keyring_entries(config: AppConfig) -> set[str]:
    refs = [k.key for k in config.access_keys]
    for provider in config.providers:
        refs.extend(provider.api_keys)
    return {parse_ref(r).value for r in refs if r.startswith(KEYRING_PREFIX)}


def provider_from_preset(preset: Preset, taken: Iterable[str]) -> ProviderConfig:
    names = set(taken)
    name = preset.kind
    n = 2
    while name in names:
        name = f"{preset.kind}-{n}"
        n += 1
    return ProviderConfig(
        name=name,
        kind=preset.kind,
        base_url=preset.base_url or "",
        protocol=preset.protocol,
        auth=preset.auth,
        api_keys=[],
        models=list(preset.default_models),
    )


def known_model_refs(config: AppConfig) -> list[str]:
    """What the alias and tier pickers offer: aliases, then provider:model per listed model."""
    refs = list(config.aliases)
    for provider in config.providers:
        refs.extend(f"{provider.name}:{model}" for model in provider.models)
    return refs


def loopback_note(host: str, has_keys: bool) -> str:
    from desktop_proxy.server.state import is_loopback_host

    if is_loopback_host(host):
        if has_keys:
            return (
                f"The gateway listens on {host} (this computer only) and requires one of these "
                "keys from every client."
            )
        return (
            f"The gateway listens on {host} only, so it is open to programs on this computer "
            "and needs no access key. Add a key to require one anyway."
        )
    if has_keys:
        return (
            f"The gateway listens on {host}: clients on your network must send one of these keys."
        )
    return (
        f"The gateway listens on {host} and is reachable from your network: add an access key, "
        "or it will refuse to start."
    )
