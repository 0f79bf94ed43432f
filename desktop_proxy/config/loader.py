"""Reading, validating and writing `config.json`.

`parse_config` checks everything and reports every problem at once, each as
"key.path: what is wrong" (`providers[1].baseUrl: must be an http(s) URL, got 'ftp://x'`), in a
single `ConfigError` that names the file. Unknown keys are errors too, with a suggestion when a
known key is close: a typo must not silently fall back to a default.

The file uses camelCase keys and carries `"version": 1`; the dataclasses in `config.models` use
snake_case. `dump_config` is the inverse of `parse_config` and leaves out values that equal their
defaults, except the few that make the file readable on their own (server address, provider
models, routing strategy, history switch).
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast, get_args
from urllib.parse import urlsplit

from desktop_proxy.config.models import (
    DEFAULT_HOST,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_PORT,
    AccessKey,
    AppConfig,
    AuthStyle,
    HistorySettings,
    PriceOverride,
    ProviderConfig,
    RoutingSettings,
    RoutingStrategy,
    ServerSettings,
    Tiers,
    Timeouts,
    WireProtocol,
)
from desktop_proxy.config.presets import PRESETS, Preset, get_preset
from desktop_proxy.config.secrets import ref_problem
from desktop_proxy.errors import ConfigError
from desktop_proxy.routing import split_explicit, tier_for_name

CONFIG_VERSION = 1

TOP_LEVEL_KEYS = (
    "version",
    "server",
    "accessKeys",
    "providers",
    "aliases",
    "tiers",
    "routing",
    "history",
)
SERVER_KEYS = ("host", "port", "maxBodyBytes", "allowedOrigins", "allowInsecureRemote")
ACCESS_KEY_KEYS = ("name", "key")
PROVIDER_KEYS = (
    "name",
    "kind",
    "baseUrl",
    "protocol",
    "auth",
    "apiKey",
    "apiKeys",
    "models",
    "weight",
    "enabled",
    "headers",
    "apiVersion",
    "deployments",
    "maxOutputTokens",
    "timeout",
)
ROUTING_KEYS = ("strategy", "timeouts", "cooldown")
TIMEOUT_KEYS = ("connect", "read")
HISTORY_KEYS = ("enabled", "storeBodies", "retentionDays", "maxSizeMb", "prices")
PRICE_KEYS = ("input", "output", "cacheRead", "cacheWrite")
TIER_KEYS = ("big", "middle", "small")

PROTOCOLS: tuple[str, ...] = get_args(WireProtocol)
AUTH_STYLES: tuple[str, ...] = get_args(AuthStyle)
STRATEGIES: tuple[str, ...] = get_args(RoutingStrategy)

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_PROVIDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_AZURE_V1_SUFFIX = "/openai/v1"

T = TypeVar("T")


# --- paths, descriptions, suggestions ---------------------------------------------------------


def _key_path(path: str, key: str) -> str:
    if _IDENT.match(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def _show(value: object, limit: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return repr(text) if isinstance(value, str) else text


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"the number {_show(value)}"
    if isinstance(value, str):
        return f"the string {_show(value)}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _suggest(word: str, options: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for a close match, else ' (known: a, b, c)'."""
    options = list(options)
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f" (known: {', '.join(options)})" if options else ""


def _is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != -1
    except ValueError:
        return False


def azure_needs_api_version(base_url: str) -> bool:
    """Azure's classic deployment API needs `api-version`; the v1 API (…/openai/v1) does not."""
    return not base_url.rstrip("/").endswith(_AZURE_V1_SUFFIX)


# --- the checker ------------------------------------------------------------------------------


class _Checker:
    """Collects problems while reading values of the expected types out of JSON objects."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append(f"{path or '(top level)'}: {message}")

    def obj(self, value: object, path: str) -> dict[str, object] | None:
        if isinstance(value, dict):
            return value
        self.add(path, f"must be an object, got {_describe(value)}")
        return None

    def section(
        self, parent: Mapping[str, object], key: str, path: str, known: tuple[str, ...]
    ) -> dict[str, object]:
        """An optional nested object (absent or null → empty), its keys checked."""
        value = parent.get(key)
        if value is None:
            return {}
        sub = self.obj(value, _key_path(path, key))
        if sub is None:
            return {}
        self.known_keys(sub, _key_path(path, key), known)
        return sub

    def known_keys(self, obj: Mapping[str, object], path: str, known: tuple[str, ...]) -> None:
        for key in obj:
            if key not in known:
                self.add(_key_path(path, key), "unknown key" + _suggest(key, known))

    def string(
        self,
        obj: Mapping[str, object],
        key: str,
        path: str,
        default: T,
        *,
        allow_empty: bool = False,
    ) -> str | T:
        if key not in obj:
            return default
        value = obj[key]
        where = _key_path(path, key)
        if not isinstance(value, str):
            self.add(where, f"must be a string, got {_describe(value)}")
            return default
        if not allow_empty and not value.strip():
            self.add(where, "must not be empty")
            return default
        return value

    def choice(
        self, obj: Mapping[str, object], key: str, path: str, options: tuple[str, ...], default: T
    ) -> str | T:
        value = self.string(obj, key, path, None)
        if value is None:
            return default
        if value not in options:
            close = difflib.get_close_matches(value, options, n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            self.add(
                _key_path(path, key),
                f"must be one of {', '.join(options)}, got {_show(value)}{hint}",
            )
            return default
        return value

    def boolean(self, obj: Mapping[str, object], key: str, path: str, default: bool) -> bool:
        if key not in obj:
            return default
        value = obj[key]
        if not isinstance(value, bool):
            self.add(_key_path(path, key), f"must be true or false, got {_describe(value)}")
            return default
        return value

    def integer(
        self,
        obj: Mapping[str, object],
        key: str,
        path: str,
        default: int,
        *,
        minimum: int = 0,
        maximum: int | None = None,
    ) -> int:
        if key not in obj:
            return default
        value = obj[key]
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < minimum
            or (maximum is not None and value > maximum)
        ):
            bounds = f" {minimum}-{maximum}" if maximum is not None else f" >= {minimum}"
            self.add(_key_path(path, key), f"must be an integer{bounds}, got {_describe(value)}")
            return default
        return value

    def number(
        self,
        obj: Mapping[str, object],
        key: str,
        path: str,
        default: T,
        *,
        positive: bool = True,
    ) -> float | T:
        if key not in obj:
            return default
        value = obj[key]
        ok = (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and (value > 0 if positive else value >= 0)
        )
        if not ok:
            what = "a number of seconds > 0" if positive else "a number of seconds >= 0"
            self.add(_key_path(path, key), f"must be {what}, got {_describe(value)}")
            return default
        assert isinstance(value, int | float)
        return float(value)

    def string_list(
        self, obj: Mapping[str, object], key: str, path: str, *, unique: bool = True
    ) -> list[str]:
        if key not in obj or obj[key] is None:
            return []
        value = obj[key]
        where = _key_path(path, key)
        if not isinstance(value, list):
            self.add(where, f"must be a list of strings, got {_describe(value)}")
            return []
        result: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                self.add(f"{where}[{i}]", f"must be a non-empty string, got {_describe(item)}")
            elif unique and item in result:
                self.add(f"{where}[{i}]", f"duplicate {_show(item)}")
            else:
                result.append(item)
        return result

    def string_map(self, obj: Mapping[str, object], key: str, path: str) -> dict[str, str]:
        if key not in obj or obj[key] is None:
            return {}
        where = _key_path(path, key)
        raw = self.obj(obj[key], where)
        if raw is None:
            return {}
        result: dict[str, str] = {}
        for k, v in raw.items():
            if not k:
                self.add(where, "keys must not be empty")
            elif not isinstance(v, str) or not v.strip():
                self.add(_key_path(where, k), f"must be a non-empty string, got {_describe(v)}")
            else:
                result[k] = v
        return result


# --- sections ---------------------------------------------------------------------------------


def _parse_server(ck: _Checker, root: Mapping[str, object]) -> ServerSettings:
    path = "server"
    raw = ck.section(root, "server", "", SERVER_KEYS)
    host = ck.string(raw, "host", path, DEFAULT_HOST)
    if "://" in host or "/" in host:
        ck.add(f"{path}.host", f"must be a host name or IP address, not a URL: {_show(host)}")
        host = DEFAULT_HOST
    origins = ck.string_list(raw, "allowedOrigins", path)
    for i, origin in enumerate(origins):
        problem = _origin_problem(origin)
        if problem:
            ck.add(f"{path}.allowedOrigins[{i}]", problem)
    return ServerSettings(
        host=host,
        port=ck.integer(raw, "port", path, DEFAULT_PORT, minimum=0, maximum=65535),
        max_body_bytes=ck.integer(raw, "maxBodyBytes", path, DEFAULT_MAX_BODY_BYTES, minimum=1),
        allowed_origins=origins,
        allow_insecure_remote=ck.boolean(raw, "allowInsecureRemote", path, False),
    )


def _origin_problem(origin: str) -> str | None:
    example = "e.g. 'http://localhost:3000' (scheme://host[:port], no path)"
    try:
        parts = urlsplit(origin)
        port_ok = parts.port != -1
    except ValueError:
        return f"is not a browser origin, {example}: {_show(origin)}"
    if not parts.scheme or not parts.netloc or not port_ok:
        return f"is not a browser origin, {example}: {_show(origin)}"
    if parts.path or parts.query or parts.fragment:
        return f"must not have a path, {example}: {_show(origin)}"
    return None


def _parse_access_keys(ck: _Checker, root: Mapping[str, object]) -> list[AccessKey]:
    raw = root.get("accessKeys")
    if raw is None:
        return []
    if not isinstance(raw, list):
        ck.add("accessKeys", f"must be a list of {{name, key}} objects, got {_describe(raw)}")
        return []
    keys: list[AccessKey] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        path = f"accessKeys[{i}]"
        if isinstance(item, str):
            # Not echoed: it is probably the key itself.
            ck.add(path, 'must be an object like {"name": "default", "key": "..."}, got a string')
            continue
        obj = ck.obj(item, path)
        if obj is None:
            continue
        ck.known_keys(obj, path, ACCESS_KEY_KEYS)
        name = ck.string(obj, "name", path, None)
        key = ck.string(obj, "key", path, None)
        if "name" not in obj:
            ck.add(f"{path}.name", "missing")
        if "key" not in obj:
            ck.add(f"{path}.key", "missing")
        if key is not None:
            problem = ref_problem(key)
            if problem:
                ck.add(f"{path}.key", problem)
                key = None
        if name is not None and name in seen:
            ck.add(
                f"{path}.name",
                f"duplicate access key name {_show(name)} (also accessKeys[{seen[name]}])",
            )
            name = None
        if name is not None and key is not None:
            seen[name] = i
            keys.append(AccessKey(name=name, key=key))
    return keys


def _default_key_refs(preset: Preset | None, base_url: str) -> list[str]:
    """The conventional env var, unless the URL points somewhere the vendor's key must not go."""
    if preset is None or not preset.requires_key or preset.key_env is None:
        return []
    if preset.base_url is not None and base_url != preset.base_url:
        return []
    return [f"env:{preset.key_env}"]


def _parse_provider(ck: _Checker, raw: object, path: str) -> ProviderConfig | None:
    obj = ck.obj(raw, path)
    if obj is None:
        return None
    ck.known_keys(obj, path, PROVIDER_KEYS)
    before = len(ck.problems)

    name = ck.string(obj, "name", path, "")
    if "name" not in obj:
        ck.add(f"{path}.name", "missing")
    elif name and not _PROVIDER_NAME.match(name):
        ck.add(
            f"{path}.name",
            f"{_show(name)} may only contain letters, digits, '.', '_' and '-' "
            "(':' and '@' separate provider and model in model references)",
        )

    kind = ck.string(obj, "kind", path, "")
    if "kind" not in obj:
        if name in PRESETS:
            kind = name
        else:
            ck.add(f"{path}.kind", f"missing (known: {', '.join(PRESETS)})")
    preset = get_preset(kind) if kind else None
    if kind and preset is None:
        ck.add(f"{path}.kind", f"unknown kind {_show(kind)}" + _suggest(kind, PRESETS))

    base_url = ck.string(obj, "baseUrl", path, None)
    if base_url is not None:
        if _is_http_url(base_url):
            base_url = base_url.rstrip("/")
        else:
            ck.add(f"{path}.baseUrl", f"must be an http(s) URL, got {_show(base_url)}")
            base_url = None
    elif "baseUrl" not in obj and preset is not None:
        if preset.base_url is None:
            example = (
                "https://{resource}.openai.azure.com"
                if preset.kind == "azure"
                else "the server's base URL, e.g. http://127.0.0.1:8000/v1"
            )
            ck.add(f"{path}.baseUrl", f"required for kind '{preset.kind}' ({example})")
        base_url = preset.base_url

    protocol = ck.choice(obj, "protocol", path, PROTOCOLS, preset.protocol if preset else "openai")
    auth = ck.choice(obj, "auth", path, AUTH_STYLES, preset.auth if preset else "bearer")

    if "apiKey" in obj and "apiKeys" in obj:
        ck.add(path, "use either apiKey (one key) or apiKeys (a list), not both")
    if "apiKey" in obj:
        single = ck.string(obj, "apiKey", path, None, allow_empty=True)
        keys = [single] if single is not None else []
        key_paths = [f"{path}.apiKey"]
    else:
        keys = ck.string_list(obj, "apiKeys", path, unique=False)
        key_paths = [f"{path}.apiKeys[{i}]" for i in range(len(keys))]
    for key, key_path in zip(keys, key_paths, strict=False):
        problem = ref_problem(key)
        if problem:
            ck.add(key_path, problem)
    if "apiKey" not in obj and "apiKeys" not in obj and base_url is not None:
        keys = _default_key_refs(preset, base_url)

    api_version = ck.string(obj, "apiVersion", path, None)
    if kind == "azure" and base_url and api_version is None and azure_needs_api_version(base_url):
        ck.add(
            f"{path}.apiVersion",
            "required for Azure unless baseUrl is the v1 API (ending in /openai/v1), "
            'e.g. "2024-10-21"',
        )

    headers = ck.string_map(obj, "headers", path)
    for header, value in headers.items():
        where = _key_path(f"{path}.headers", header)
        if not _HEADER_NAME.match(header):
            ck.add(where, "is not a valid HTTP header name")
        if "\r" in value or "\n" in value:
            ck.add(where, "header values must not contain line breaks")

    max_tokens: dict[str, int] = {}
    raw_max = obj.get("maxOutputTokens")
    if raw_max is not None:
        max_obj = ck.obj(raw_max, f"{path}.maxOutputTokens")
        for model in max_obj or {}:
            max_tokens[model] = ck.integer(
                max_obj or {}, model, f"{path}.maxOutputTokens", 0, minimum=1
            )

    provider = ProviderConfig(
        name=name,
        kind=kind,
        base_url=base_url or "",
        protocol=cast(WireProtocol, protocol),  # checked against PROTOCOLS
        auth=cast(AuthStyle, auth),  # checked against AUTH_STYLES
        api_keys=keys,
        models=ck.string_list(obj, "models", path),
        weight=ck.integer(obj, "weight", path, 1, minimum=0),
        enabled=ck.boolean(obj, "enabled", path, True),
        headers=headers,
        api_version=api_version,
        deployments=ck.string_map(obj, "deployments", path),
        max_output_tokens=max_tokens,
        timeout=ck.number(obj, "timeout", path, None),
    )
    return provider if len(ck.problems) == before else None


def _parse_providers(
    ck: _Checker, root: Mapping[str, object]
) -> tuple[list[ProviderConfig], set[str], set[str]]:
    """The valid providers, and every provider name and model seen (for reference checks).

    Names and models of invalid providers count too, so that one broken provider entry does
    not also make every alias that points at it an error.
    """
    raw = root.get("providers")
    if raw is None:
        return [], set(), set()
    if not isinstance(raw, list):
        ck.add("providers", f"must be a list of provider objects, got {_describe(raw)}")
        return [], set(), set()
    providers: list[ProviderConfig] = []
    names: set[str] = set()
    listed: set[str] = set()
    first_index: dict[str, int] = {}
    for i, item in enumerate(raw):
        path = f"providers[{i}]"
        provider = _parse_provider(ck, item, path)
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(item, dict):
            for key in ("models", "deployments"):
                models = item.get(key)
                if isinstance(models, list | dict):
                    listed.update(m for m in models if isinstance(m, str))
        if isinstance(name, str) and name:
            if name in first_index:
                ck.add(
                    f"{path}.name",
                    f"duplicate provider name {_show(name)} (also providers[{first_index[name]}])",
                )
                continue
            first_index[name] = i
            names.add(name)
        if provider is not None:
            providers.append(provider)
    return providers, names, listed


def _parse_tiers(ck: _Checker, root: Mapping[str, object]) -> Tiers:
    raw = ck.section(root, "tiers", "", TIER_KEYS)
    return Tiers(
        big=ck.string(raw, "big", "tiers", None),
        middle=ck.string(raw, "middle", "tiers", None),
        small=ck.string(raw, "small", "tiers", None),
    )


def _parse_routing(ck: _Checker, root: Mapping[str, object]) -> RoutingSettings:
    raw = ck.section(root, "routing", "", ROUTING_KEYS)
    defaults = RoutingSettings()
    timeouts = ck.section(raw, "timeouts", "routing", TIMEOUT_KEYS)
    return RoutingSettings(
        strategy=cast(
            RoutingStrategy, ck.choice(raw, "strategy", "routing", STRATEGIES, defaults.strategy)
        ),
        timeouts=Timeouts(
            connect=ck.number(timeouts, "connect", "routing.timeouts", defaults.timeouts.connect),
            read=ck.number(timeouts, "read", "routing.timeouts", defaults.timeouts.read),
        ),
        cooldown=ck.number(raw, "cooldown", "routing", defaults.cooldown, positive=False),
    )


def _price_number(ck: _Checker, obj: Mapping[str, object], key: str, path: str) -> float | None:
    if key not in obj:
        return None
    value = obj[key]
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        ck.add(
            _key_path(path, key),
            f"must be a price in USD per million tokens (a number >= 0), got {_describe(value)}",
        )
        return None
    return float(value)


def _parse_prices(
    ck: _Checker, raw: Mapping[str, object], names: set[str]
) -> dict[str, PriceOverride]:
    """`history.prices`: {"provider:model" | "model" | "provider:*": {input, output, ...}}."""
    if raw.get("prices") is None:
        return {}
    obj = ck.obj(raw["prices"], "history.prices")
    if obj is None:
        return {}
    prices: dict[str, PriceOverride] = {}
    for ref, entry in obj.items():
        where = _key_path("history.prices", ref)
        if not ref.strip():
            ck.add("history.prices", "model names must not be empty")
            continue
        provider, colon, model = ref.partition(":")
        if colon and model == "*" and provider not in names:
            ck.add(
                where,
                f"refers to unknown provider {_show(provider)}" + _suggest(provider, sorted(names)),
            )
            continue
        price = ck.obj(entry, where)
        if price is None:
            continue
        ck.known_keys(price, where, PRICE_KEYS)
        values = {key: _price_number(ck, price, key, where) for key in PRICE_KEYS}
        for key in ("input", "output"):
            if key not in price:
                ck.add(_key_path(where, key), "missing (USD per million tokens)")
        input_price, output_price = values["input"], values["output"]
        if input_price is None or output_price is None:
            continue
        prices[ref] = PriceOverride(
            input=input_price,
            output=output_price,
            cache_read=values["cacheRead"],
            cache_write=values["cacheWrite"],
        )
    return prices


def _parse_history(ck: _Checker, root: Mapping[str, object], names: set[str]) -> HistorySettings:
    raw = ck.section(root, "history", "", HISTORY_KEYS)
    d = HistorySettings()
    return HistorySettings(
        enabled=ck.boolean(raw, "enabled", "history", d.enabled),
        store_bodies=ck.boolean(raw, "storeBodies", "history", d.store_bodies),
        retention_days=ck.integer(raw, "retentionDays", "history", d.retention_days),
        max_size_mb=ck.integer(raw, "maxSizeMb", "history", d.max_size_mb),
        prices=_parse_prices(ck, raw, names),
    )


def _parse_aliases(ck: _Checker, root: Mapping[str, object]) -> dict[str, str]:
    raw = root.get("aliases")
    if raw is None:
        return {}
    obj = ck.obj(raw, "aliases")
    if obj is None:
        return {}
    aliases: dict[str, str] = {}
    for name, target in obj.items():
        where = _key_path("aliases", name)
        if not name.strip():
            ck.add("aliases", "alias names must not be empty")
        elif not isinstance(target, str) or not target.strip():
            ck.add(where, f"must be a model reference string, got {_describe(target)}")
        else:
            aliases[name] = target
    return aliases


# --- cross-references -------------------------------------------------------------------------


def _explicit_provider(ref: str, names: set[str]) -> str | None:
    """The provider a `provider:model` / `model@provider` reference names, if it names one."""
    explicit = split_explicit(ref, names)
    return explicit[0] if explicit else None


def _reference_problem(
    ref: str,
    names: set[str],
    listed: set[str],
    aliases: Mapping[str, str],
    tiers: Tiers,
    *,
    allow_tier: bool,
) -> str | None:
    if _explicit_provider(ref, names) or ref in aliases or ref in listed:
        return None
    if allow_tier:
        tier = tier_for_name(ref)
        if tier is not None and getattr(tiers, tier) is not None:
            return None
    known = ", ".join(sorted(names)) or "none configured"
    prefix, colon, rest = ref.partition(":")
    if colon and rest:
        return (
            f"refers to unknown provider {_show(prefix)}"
            + _suggest(prefix, sorted(names))
            + f", and no provider lists {_show(ref)} as a model"
        )
    if colon:
        return f"{_show(ref)} has no model after the ':'"
    model, at, suffix = ref.rpartition("@")
    if at and model:
        return f"refers to unknown provider {_show(suffix)}" + _suggest(suffix, sorted(names))
    example = f" (e.g. '{sorted(names)[0]}:{ref}')" if names else ""
    return (
        f"no provider lists the model {_show(ref)}; name the provider with "
        f"'provider:model'{example} (providers: {known})"
    )


def _check_references(
    ck: _Checker,
    names: set[str],
    listed: set[str],
    aliases: dict[str, str],
    tiers: Tiers,
) -> None:
    for name in list(aliases):
        where = _key_path("aliases", name)
        if _explicit_provider(name, names):
            ck.add(
                where,
                "alias name looks like a provider:model or model@provider reference "
                "and would never be used; rename it",
            )
            continue
        problem = _reference_problem(aliases[name], names, listed, aliases, tiers, allow_tier=True)
        if problem:
            ck.add(where, problem)
        chain = [name]
        target = aliases[name]
        while target in aliases and not _explicit_provider(target, names):
            if target == name:
                ck.add(where, "alias loop: " + " → ".join([*chain, target]))
                break
            if target in chain:
                break  # a loop further along; reported at its own aliases
            chain.append(target)
            target = aliases[target]
    for tier in TIER_KEYS:
        ref = getattr(tiers, tier)
        if ref is None:
            continue
        problem = _reference_problem(ref, names, listed, aliases, tiers, allow_tier=False)
        if problem:
            ck.add(f"tiers.{tier}", problem)


# --- public API -------------------------------------------------------------------------------


def parse_config(data: object, source: str) -> AppConfig:
    """Validate decoded JSON into an AppConfig.

    Raises:
        ConfigError: naming `source` and listing every problem found.
    """
    ck = _Checker()
    root = ck.obj(data, "")
    if root is None:
        raise ConfigError(source, ck.problems)
    ck.known_keys(root, "", TOP_LEVEL_KEYS)
    if "version" in root:
        version = root["version"]
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            ck.add("version", f"must be the integer {CONFIG_VERSION}, got {_describe(version)}")
        elif version > CONFIG_VERSION:
            ck.add(
                "version",
                f"this file is version {version}, newer than this desktop-proxy understands "
                f"({CONFIG_VERSION}); upgrade desktop-proxy",
            )
    server = _parse_server(ck, root)
    access_keys = _parse_access_keys(ck, root)
    providers, names, listed = _parse_providers(ck, root)
    aliases = _parse_aliases(ck, root)
    tiers = _parse_tiers(ck, root)
    routing = _parse_routing(ck, root)
    history = _parse_history(ck, root, names)
    _check_references(ck, names, listed, aliases, tiers)
    if ck.problems:
        raise ConfigError(source, ck.problems)
    return AppConfig(
        server=server,
        access_keys=access_keys,
        providers=providers,
        aliases=aliases,
        tiers=tiers,
        routing=routing,
        history=history,
    )


def _read_json(path: Path) -> object:
    """Decode the file; FileNotFoundError passes through, everything else is a ConfigError."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise ConfigError(str(path), ["is a directory, not a config file"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            str(path), [f"is not UTF-8 text (byte {exc.start}: {exc.reason})"]
        ) from None
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc.strerror or exc}"]) from None

    duplicates: list[str] = []

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                duplicates.append(key)
            result[key] = value
        return result

    def no_constants(name: str) -> None:
        raise ValueError(f"{name} is not valid JSON")

    try:
        data = json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constants)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            str(path), [f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"]
        ) from None
    except ValueError as exc:
        raise ConfigError(str(path), [f"invalid JSON: {exc}"]) from None
    if duplicates:
        raise ConfigError(
            str(path),
            [f"key {_show(k)} appears twice in the same object; keep one" for k in duplicates],
        )
    return data


def load_config(path: Path) -> AppConfig:
    """Read and validate `path`.

    Raises:
        ConfigError: the file is missing, unreadable, not JSON, or invalid.
    """
    try:
        data = _read_json(path)
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found"]) from None
    return parse_config(data, str(path))


def default_config() -> AppConfig:
    """The configuration of a first run: the local Ollama server, no keys, no aliases."""
    preset = PRESETS["ollama"]
    assert preset.base_url is not None
    return AppConfig(
        providers=[
            ProviderConfig(
                name="ollama",
                kind="ollama",
                base_url=preset.base_url,
                protocol=preset.protocol,
                auth=preset.auth,
            )
        ]
    )


def load_or_create(path: Path, *, write_default: bool = False) -> tuple[AppConfig, bool]:
    """Load `path`, or fall back to `default_config()` when it does not exist.

    Returns (config, created): `created` is True when the file was missing and the default
    is returned; it is written to `path` only if `write_default` is set.

    Raises:
        ConfigError: the file exists but cannot be read or is invalid (never replaced).
    """
    try:
        data = _read_json(path)
    except FileNotFoundError:
        config = default_config()
        if write_default:
            save_config(config, path)
        return config, True
    return parse_config(data, str(path)), False


def first_run_message(path: Path) -> str:
    """What to tell a user whose config file did not exist yet."""
    return (
        f"No configuration found; using the default (local Ollama at "
        f"{PRESETS['ollama'].base_url}, no keys).\n"
        f"To add providers, edit {path}, e.g.\n"
        '  "providers": [{"name": "openai", "kind": "openai", '
        '"apiKey": "env:OPENAI_API_KEY", "models": ["gpt-4o-mini"]}]\n'
        f"Known kinds: {', '.join(PRESETS)}."
    )


def _number_out(value: float) -> int | float:
    return int(value) if value.is_integer() else value


def _dump_provider(p: ProviderConfig) -> dict[str, Any]:
    preset = get_preset(p.kind)
    out: dict[str, Any] = {"name": p.name, "kind": p.kind}
    if preset is None or p.base_url != preset.base_url:
        out["baseUrl"] = p.base_url
    if preset is None or p.protocol != preset.protocol:
        out["protocol"] = p.protocol
    if preset is None or p.auth != preset.auth:
        out["auth"] = p.auth
    # Written when present, and when empty but the loader would fill in a default key.
    if p.api_keys or _default_key_refs(preset, p.base_url):
        out["apiKeys"] = list(p.api_keys)
    out["models"] = list(p.models)
    if p.deployments:
        out["deployments"] = dict(p.deployments)
    if p.api_version is not None:
        out["apiVersion"] = p.api_version
    if p.weight != 1:
        out["weight"] = p.weight
    if not p.enabled:
        out["enabled"] = False
    if p.headers:
        out["headers"] = dict(p.headers)
    if p.max_output_tokens:
        out["maxOutputTokens"] = dict(p.max_output_tokens)
    if p.timeout is not None:
        out["timeout"] = _number_out(p.timeout)
    return out


def _dump_price(price: PriceOverride) -> dict[str, Any]:
    out: dict[str, Any] = {
        "input": _number_out(price.input),
        "output": _number_out(price.output),
    }
    if price.cache_read is not None:
        out["cacheRead"] = _number_out(price.cache_read)
    if price.cache_write is not None:
        out["cacheWrite"] = _number_out(price.cache_write)
    return out


def dump_config(cfg: AppConfig) -> dict[str, Any]:
    """The camelCase JSON form of `cfg`; `parse_config(dump_config(cfg), ...) == cfg`."""
    server: dict[str, Any] = {"host": cfg.server.host, "port": cfg.server.port}
    if cfg.server.max_body_bytes != DEFAULT_MAX_BODY_BYTES:
        server["maxBodyBytes"] = cfg.server.max_body_bytes
    if cfg.server.allowed_origins:
        server["allowedOrigins"] = list(cfg.server.allowed_origins)
    if cfg.server.allow_insecure_remote:
        server["allowInsecureRemote"] = True

    out: dict[str, Any] = {"version": CONFIG_VERSION, "server": server}
    if cfg.access_keys:
        out["accessKeys"] = [{"name": k.name, "key": k.key} for k in cfg.access_keys]
    out["providers"] = [_dump_provider(p) for p in cfg.providers]
    out["aliases"] = dict(cfg.aliases)
    tiers = {t: getattr(cfg.tiers, t) for t in TIER_KEYS if getattr(cfg.tiers, t) is not None}
    if tiers:
        out["tiers"] = tiers

    d_routing = RoutingSettings()
    routing: dict[str, Any] = {"strategy": cfg.routing.strategy}
    timeouts: dict[str, Any] = {}
    if cfg.routing.timeouts.connect != d_routing.timeouts.connect:
        timeouts["connect"] = _number_out(cfg.routing.timeouts.connect)
    if cfg.routing.timeouts.read != d_routing.timeouts.read:
        timeouts["read"] = _number_out(cfg.routing.timeouts.read)
    if timeouts:
        routing["timeouts"] = timeouts
    if cfg.routing.cooldown != d_routing.cooldown:
        routing["cooldown"] = _number_out(cfg.routing.cooldown)
    out["routing"] = routing

    d_history = HistorySettings()
    history: dict[str, Any] = {"enabled": cfg.history.enabled}
    if cfg.history.store_bodies != d_history.store_bodies:
        history["storeBodies"] = cfg.history.store_bodies
    if cfg.history.retention_days != d_history.retention_days:
        history["retentionDays"] = cfg.history.retention_days
    if cfg.history.max_size_mb != d_history.max_size_mb:
        history["maxSizeMb"] = cfg.history.max_size_mb
    if cfg.history.prices:
        history["prices"] = {ref: _dump_price(price) for ref, price in cfg.history.prices.items()}
    out["history"] = history
    return out


def save_config(cfg: AppConfig, path: Path) -> None:
    """Write `cfg` to `path` atomically (temp file, fsync, rename), readable by the user only.

    The configuration is validated first, so an invalid one never replaces a good file.

    Raises:
        ConfigError: `cfg` is invalid, or the file cannot be written.
    """
    data = dump_config(cfg)
    parse_config(data, str(path))
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot write the file: {exc.strerror or exc}"]) from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            if os.name == "posix":
                os.fchmod(f.fileno(), 0o600)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(str(path), [f"cannot write the file: {exc.strerror or exc}"]) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if os.name == "posix":
        _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable; best effort (some file systems refuse)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
