from __future__ import annotations

import copy
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from desktop_proxy.config.loader import (
    default_config,
    dump_config,
    first_run_message,
    load_config,
    load_or_create,
    parse_config,
    save_config,
)
from desktop_proxy.config.models import (
    AccessKey,
    AppConfig,
    HistorySettings,
    PriceOverride,
    RoutingSettings,
    ServerSettings,
    Tiers,
    Timeouts,
)
from desktop_proxy.errors import ConfigError

# The example from the issue.
EXAMPLE: dict[str, Any] = {
    "server": {"host": "127.0.0.1", "port": 6789},
    "accessKeys": [{"name": "default", "key": "dp-0123456789abcdef"}],
    "providers": [
        {
            "name": "openai",
            "kind": "openai",
            "baseUrl": "https://api.openai.com/v1",
            "apiKeys": ["env:OPENAI_API_KEY"],
            "models": ["gpt-4o", "gpt-4o-mini"],
            "weight": 1,
        }
    ],
    "aliases": {"fast": "openai:gpt-4o-mini"},
    "tiers": {"big": "openai:gpt-4o", "middle": "openai:gpt-4o", "small": "openai:gpt-4o-mini"},
    "routing": {"strategy": "failover"},
    "history": {"enabled": True},
}


def problems_of(data: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "config.json")
    assert info.value.path == "config.json"
    return info.value.problems


def with_changes(**top: Any) -> dict[str, Any]:
    data = copy.deepcopy(EXAMPLE)
    data.update(top)
    return data


def provider(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "p", "kind": "openai"}
    base.update(fields)
    return base


# --- parsing ----------------------------------------------------------------------------------


def test_issue_example_parses() -> None:
    """The example configuration from the issue is valid and maps onto the dataclasses."""
    cfg = parse_config(EXAMPLE, "config.json")
    assert cfg.server == ServerSettings(host="127.0.0.1", port=6789)
    assert cfg.access_keys == [AccessKey(name="default", key="dp-0123456789abcdef")]
    (openai,) = cfg.providers
    assert openai.name == "openai"
    assert openai.base_url == "https://api.openai.com/v1"
    assert (openai.protocol, openai.auth) == ("openai", "bearer")
    assert openai.api_keys == ["env:OPENAI_API_KEY"]
    assert openai.models == ["gpt-4o", "gpt-4o-mini"]
    assert cfg.aliases == {"fast": "openai:gpt-4o-mini"}
    assert cfg.tiers == Tiers(
        big="openai:gpt-4o", middle="openai:gpt-4o", small="openai:gpt-4o-mini"
    )
    assert cfg.routing.strategy == "failover"
    assert cfg.history.enabled


def test_empty_object_is_all_defaults() -> None:
    """An empty object is a valid configuration with every default."""
    assert parse_config({}, "x") == AppConfig()


def test_preset_fills_base_url_protocol_and_auth() -> None:
    """Missing baseUrl, protocol and auth come from the kind's preset."""
    cfg = parse_config(
        {"providers": [{"name": "claude", "kind": "anthropic", "apiKey": "k-1"}]}, "x"
    )
    p = cfg.providers[0]
    assert (p.base_url, p.protocol, p.auth) == (
        "https://api.anthropic.com",
        "anthropic",
        "x-api-key",
    )
    assert p.api_keys == ["k-1"]


def test_kind_defaults_to_a_preset_named_like_the_provider() -> None:
    """A provider named after a preset kind may leave out `kind`."""
    cfg = parse_config({"providers": [{"name": "ollama"}]}, "x")
    assert cfg.providers[0].kind == "ollama"
    assert cfg.providers[0].base_url == "http://127.0.0.1:11434/v1"


def test_conventional_env_key_is_the_default_for_vendor_urls() -> None:
    """With no keys given, a vendor preset at its own URL uses its conventional env var."""
    cfg = parse_config({"providers": [{"name": "openai", "kind": "openai"}]}, "x")
    assert cfg.providers[0].api_keys == ["env:OPENAI_API_KEY"]


def test_no_default_key_for_a_custom_base_url() -> None:
    """The openai kind used as a generic server gets no default key (it must not leak there)."""
    cfg = parse_config({"providers": [provider(baseUrl="http://127.0.0.1:8000/v1/")]}, "x")
    p = cfg.providers[0]
    assert p.api_keys == []
    assert p.base_url == "http://127.0.0.1:8000/v1"


def test_explicit_empty_key_list_is_kept() -> None:
    """`apiKeys: []` means no key, even where a default env var would apply."""
    cfg = parse_config({"providers": [provider(apiKeys=[])]}, "x")
    assert cfg.providers[0].api_keys == []


def test_optional_provider_fields() -> None:
    """enabled, headers, apiVersion, deployments, maxOutputTokens, timeout and weight parse."""
    cfg = parse_config(
        {
            "providers": [
                {
                    "name": "az",
                    "kind": "azure",
                    "baseUrl": "https://res.openai.azure.com",
                    "apiKey": "keyring:azure",
                    "apiVersion": "2024-10-21",
                    "deployments": {"gpt-4o": "my-gpt4o"},
                    "maxOutputTokens": {"gpt-4o": 16384},
                    "headers": {"X-Team": "a"},
                    "timeout": 30,
                    "weight": 0,
                    "enabled": False,
                }
            ]
        },
        "x",
    )
    p = cfg.providers[0]
    assert p.auth == "api-key"
    assert p.deployments == {"gpt-4o": "my-gpt4o"}
    assert p.max_output_tokens == {"gpt-4o": 16384}
    assert p.headers == {"X-Team": "a"}
    assert (p.timeout, p.weight, p.enabled, p.api_version) == (30.0, 0, False, "2024-10-21")


def test_server_routing_history_sections() -> None:
    """Every documented server, routing and history key is read."""
    cfg = parse_config(
        {
            "version": 1,
            "server": {
                "host": "0.0.0.0",
                "port": 0,
                "maxBodyBytes": 1024,
                "allowedOrigins": ["http://localhost:3000"],
                "allowInsecureRemote": True,
            },
            "routing": {
                "strategy": "weighted",
                "timeouts": {"connect": 2, "read": 9.5},
                "cooldown": 0,
            },
            "history": {
                "enabled": False,
                "storeBodies": False,
                "retentionDays": 7,
                "maxSizeMb": 10,
            },
        },
        "x",
    )
    assert cfg.server == ServerSettings("0.0.0.0", 0, 1024, ["http://localhost:3000"], True)
    assert cfg.routing == RoutingSettings("weighted", Timeouts(2.0, 9.5), 0.0)
    assert cfg.history == HistorySettings(False, False, 7, 10)


# --- problems ---------------------------------------------------------------------------------


def test_bad_base_url_names_path_and_value() -> None:
    """A non-http base URL is reported at its key path with the offending value."""
    data = {"providers": [provider(name="a"), provider(name="b", baseUrl="ftp://x")]}
    assert problems_of(data) == ["providers[1].baseUrl: must be an http(s) URL, got 'ftp://x'"]


@pytest.mark.parametrize("port", [70000, -1, "80", True, 1.5])
def test_bad_port(port: object) -> None:
    """A port that is not an integer 0-65535 is reported."""
    (problem,) = problems_of({"server": {"port": port}})
    assert problem.startswith("server.port: must be an integer 0-65535")


def test_unknown_kind_suggests_close_match() -> None:
    """A misspelt kind is reported with the closest known kind."""
    (problem,) = problems_of({"providers": [provider(kind="opneai")]})
    assert problem == "providers[0].kind: unknown kind 'opneai' (did you mean 'openai'?)"


def test_unknown_kind_without_close_match_lists_kinds() -> None:
    """An unrecognisable kind is reported with the list of known kinds."""
    (problem,) = problems_of({"providers": [provider(kind="zzzz")]})
    assert problem.startswith("providers[0].kind: unknown kind 'zzzz' (known: openai, anthropic,")


def test_unknown_top_level_key_suggests() -> None:
    """Unknown top-level keys are errors, with a suggestion when one is close."""
    assert problems_of(with_changes(provider=[])) == [
        "provider: unknown key (did you mean 'providers'?)"
    ]


def test_unknown_nested_key_suggests() -> None:
    """Unknown keys inside sections are errors too."""
    assert problems_of({"server": {"prot": 1}}) == [
        "server.prot: unknown key (did you mean 'port'?)"
    ]
    (problem,) = problems_of({"providers": [provider(baseURL="https://x")]})
    assert problem == "providers[0].baseURL: unknown key (did you mean 'baseUrl'?)"


def test_alias_to_unknown_provider() -> None:
    """An alias whose target names a provider that does not exist is reported."""
    (problem,) = problems_of(with_changes(aliases={"fast": "foo:bar"}))
    assert problem.startswith("aliases.fast: refers to unknown provider 'foo'")


def test_alias_to_unknown_provider_with_at_form() -> None:
    """model@provider targets naming a missing provider are reported, with a suggestion."""
    (problem,) = problems_of(with_changes(aliases={"fast": "gpt-4o@opnai"}))
    assert problem == "aliases.fast: refers to unknown provider 'opnai' (did you mean 'openai'?)"


def test_alias_to_unlisted_bare_model() -> None:
    """A bare alias target that no provider lists is reported with the provider:model form."""
    (problem,) = problems_of(with_changes(aliases={"x": "gpt-9"}))
    assert "no provider lists the model 'gpt-9'" in problem
    assert "'openai:gpt-9'" in problem


def test_alias_to_listed_bare_model_and_other_alias_is_fine() -> None:
    """Alias targets may be bare listed models, other aliases, or tier names with a tier set."""
    cfg = parse_config(with_changes(aliases={"a": "gpt-4o", "b": "a", "c": "claude-opus"}), "x")
    assert cfg.aliases["b"] == "a"


def test_alias_loop() -> None:
    """Aliases that refer to each other in a circle are reported."""
    problems = problems_of(with_changes(aliases={"a": "b", "b": "a"}))
    assert "aliases.a: alias loop: a → b → a" in problems
    assert "aliases.b: alias loop: b → a → b" in problems


def test_alias_shadowed_by_explicit_form() -> None:
    """An alias named like provider:model can never be used, so it is an error."""
    (problem,) = problems_of(with_changes(aliases={"openai:x": "gpt-4o"}))
    assert problem.startswith('aliases["openai:x"]: alias name looks like')


def test_tier_to_unknown_provider() -> None:
    """Tier targets are checked like alias targets."""
    (problem,) = problems_of(with_changes(tiers={"big": "nope:model"}))
    assert problem.startswith("tiers.big: refers to unknown provider 'nope'")


def test_duplicate_provider_names() -> None:
    """Two providers with the same name are reported at the second one."""
    data = {"providers": [provider(name="a"), provider(name="a")]}
    assert problems_of(data) == [
        "providers[1].name: duplicate provider name 'a' (also providers[0])"
    ]


def test_api_key_and_api_keys_together() -> None:
    """apiKey and apiKeys are mutually exclusive."""
    (problem,) = problems_of({"providers": [provider(apiKey="a", apiKeys=["b"])]})
    assert problem == "providers[0]: use either apiKey (one key) or apiKeys (a list), not both"


def test_bad_secret_references() -> None:
    """Malformed key references are reported at their index."""
    problems = problems_of({"providers": [provider(apiKeys=["env:", "ok-key", 5])]})
    assert problems[0].startswith("providers[0].apiKeys[2]: must be a non-empty string")
    assert problems[1].startswith("providers[0].apiKeys[0]: 'env:' needs a variable name")


def test_access_key_given_as_string_is_not_echoed() -> None:
    """An access key written as a bare string is an error that does not print the key."""
    (problem,) = problems_of({"accessKeys": ["dp-supersecret-value"]})
    assert problem.startswith("accessKeys[0]: must be an object like")
    assert "supersecret" not in problem


def test_provider_name_must_not_contain_reference_separators() -> None:
    """Provider names cannot contain ':' or '@', which separate provider and model."""
    (problem,) = problems_of({"providers": [provider(name="my:prov")]})
    assert problem.startswith("providers[0].name: 'my:prov' may only contain")


def test_missing_name_and_kind() -> None:
    """A provider without name or kind gets one problem for each."""
    problems = problems_of({"providers": [{"baseUrl": "https://x"}]})
    assert "providers[0].name: missing" in problems
    assert any(p.startswith("providers[0].kind: missing (known: openai") for p in problems)


def test_azure_needs_base_url_and_api_version() -> None:
    """Azure needs a base URL, and an apiVersion unless the URL is the v1 API."""
    (problem,) = problems_of({"providers": [provider(kind="azure")]})
    assert problem.startswith("providers[0].baseUrl: required for kind 'azure'")
    (problem,) = problems_of(
        {"providers": [provider(kind="azure", baseUrl="https://r.openai.azure.com")]}
    )
    assert problem.startswith("providers[0].apiVersion: required for Azure")
    cfg = parse_config(
        {"providers": [provider(kind="azure", baseUrl="https://r.openai.azure.com/openai/v1")]},
        "x",
    )
    assert cfg.providers[0].api_version is None


def test_generic_kinds_need_base_url() -> None:
    """openai-compatible and anthropic-compatible have no default URL."""
    for kind in ("openai-compatible", "anthropic-compatible"):
        (problem,) = problems_of({"providers": [provider(kind=kind)]})
        assert problem.startswith(f"providers[0].baseUrl: required for kind '{kind}'")


def test_type_errors_are_described() -> None:
    """Wrong JSON types are reported with what was found."""
    problems = problems_of(
        {
            "providers": [provider(weight=-1, enabled="yes", models="gpt-4o", timeout=0)],
            "routing": {"strategy": "failovr"},
            "history": {"retentionDays": 1.5},
        }
    )
    assert problems == [
        "providers[0].models: must be a list of strings, got the string 'gpt-4o'",
        "providers[0].weight: must be an integer >= 0, got the number -1",
        "providers[0].enabled: must be true or false, got the string 'yes'",
        "providers[0].timeout: must be a number of seconds > 0, got the number 0",
        "routing.strategy: must be one of failover, round-robin, weighted, random, "
        "got 'failovr' (did you mean 'failover'?)",
        "history.retentionDays: must be an integer >= 0, got the number 1.5",
    ]


def test_header_values_must_not_break_lines() -> None:
    """Header values with line breaks (header injection) are refused."""
    (problem,) = problems_of({"providers": [provider(headers={"X-A": "a\r\nB: c"})]})
    assert problem == "providers[0].headers.X-A: header values must not contain line breaks"


def test_allowed_origins_must_be_origins() -> None:
    """allowedOrigins entries must be scheme://host[:port] without a path."""
    problems = problems_of({"server": {"allowedOrigins": ["http://a.test/path", "nonsense"]}})
    assert problems[0].startswith("server.allowedOrigins[0]: must not have a path")
    assert problems[1].startswith("server.allowedOrigins[1]: is not a browser origin")


def test_version_checks() -> None:
    """version 1 is accepted; a newer or malformed version is an error."""
    assert parse_config({"version": 1}, "x") == AppConfig()
    (problem,) = problems_of({"version": 2})
    assert "newer than this desktop-proxy understands" in problem
    (problem,) = problems_of({"version": "1"})
    assert problem.startswith("version: must be the integer 1")


def test_top_level_must_be_an_object() -> None:
    """A JSON document that is not an object is reported."""
    assert problems_of([]) == ["(top level): must be an object, got a list"]


def test_every_problem_is_reported_at_once() -> None:
    """Problems in several sections all appear in one ConfigError."""
    data = {
        "server": {"port": "x"},
        "providers": [provider(kind="opneai"), provider(name="b", baseUrl="ftp://x")],
        "aliases": {"fast": "foo:bar"},
        "history": {"enabled": 1},
        "extra": True,
    }
    problems = problems_of(data)
    paths = [p.split(":", 1)[0] for p in problems]
    assert paths == [
        "extra",
        "server.port",
        "providers[0].kind",
        "providers[1].baseUrl",
        "history.enabled",
        "aliases.fast",
    ]


def test_config_error_message_names_file() -> None:
    """The error's text names the source and lists each problem."""
    with pytest.raises(ConfigError) as info:
        parse_config({"server": {"port": -5}}, "/tmp/c.json")
    assert str(info.value).startswith("Invalid configuration in /tmp/c.json:\n  - server.port")


# --- files ------------------------------------------------------------------------------------


def test_load_config_reads_file(tmp_path: Path) -> None:
    """load_config parses a JSON file (a UTF-8 BOM is tolerated)."""
    path = tmp_path / "config.json"
    path.write_text("\ufeff" + json.dumps(EXAMPLE), encoding="utf-8")
    assert load_config(path) == parse_config(EXAMPLE, "x")


def test_invalid_json_reports_line_and_column(tmp_path: Path) -> None:
    """Broken JSON is a ConfigError naming the file, line and column."""
    path = tmp_path / "config.json"
    path.write_text('{\n  "server": {"port": 1,}\n}\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.path == str(path)
    (problem,) = info.value.problems
    assert problem.startswith("invalid JSON at line 2, column 24:")


def test_missing_file(tmp_path: Path) -> None:
    """load_config on a missing file is a ConfigError, not FileNotFoundError."""
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.json")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    """A directory where the config file should be is reported."""
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_duplicate_json_keys(tmp_path: Path) -> None:
    """A key given twice in one object is reported instead of silently keeping the last."""
    path = tmp_path / "config.json"
    path.write_text('{"server": {"port": 1, "port": 2}}', encoding="utf-8")
    with pytest.raises(ConfigError, match="'port' appears twice"):
        load_config(path)


def test_nan_is_rejected(tmp_path: Path) -> None:
    """NaN and Infinity, which Python's json accepts, are refused."""
    path = tmp_path / "config.json"
    path.write_text('{"routing": {"cooldown": NaN}}', encoding="utf-8")
    with pytest.raises(ConfigError, match="NaN is not valid JSON"):
        load_config(path)


def rich_config() -> AppConfig:
    return parse_config(
        {
            "server": {"port": 7000, "allowedOrigins": ["https://app.test"], "maxBodyBytes": 10},
            "accessKeys": [{"name": "default", "key": "keyring:dp"}],
            "providers": [
                {"name": "openai", "kind": "openai", "models": ["gpt-4o"]},
                {"name": "local", "kind": "openai", "baseUrl": "http://127.0.0.1:8000/v1"},
                {"name": "ollama", "kind": "ollama", "models": ["llama3:8b"], "weight": 0},
                {
                    "name": "az",
                    "kind": "azure",
                    "baseUrl": "https://r.openai.azure.com",
                    "apiKeys": ["env:AZ1", "env:AZ2"],
                    "apiVersion": "2024-10-21",
                    "deployments": {"gpt-4o": "dep"},
                    "maxOutputTokens": {"gpt-4o": 4096},
                    "headers": {"X-A": "b"},
                    "timeout": 12.5,
                    "enabled": False,
                    "auth": "bearer",
                },
            ],
            "aliases": {"fast": "gpt-4o", "local": "ollama:llama3:8b"},
            "tiers": {"small": "fast"},
            "routing": {"strategy": "random", "timeouts": {"read": 60}, "cooldown": 5},
            "history": {"storeBodies": False, "retentionDays": 0},
        },
        "x",
    )


def test_dump_round_trips() -> None:
    """parse_config(dump_config(cfg)) gives back the same configuration."""
    for cfg in (rich_config(), default_config(), parse_config(EXAMPLE, "x"), AppConfig()):
        assert parse_config(dump_config(cfg), "again") == cfg


def test_dump_is_camel_case_and_omits_defaults() -> None:
    """The dump uses camelCase, carries the version, and leaves out preset and default values."""
    data = dump_config(rich_config())
    assert data["version"] == 1
    assert data["server"] == {
        "host": "127.0.0.1",
        "port": 7000,
        "maxBodyBytes": 10,
        "allowedOrigins": ["https://app.test"],
    }
    openai, local, ollama, az = data["providers"]
    assert openai == {
        "name": "openai",
        "kind": "openai",
        "apiKeys": ["env:OPENAI_API_KEY"],
        "models": ["gpt-4o"],
    }
    assert local == {
        "name": "local",
        "kind": "openai",
        "baseUrl": "http://127.0.0.1:8000/v1",
        "models": [],
    }
    assert ollama == {"name": "ollama", "kind": "ollama", "models": ["llama3:8b"], "weight": 0}
    assert az["auth"] == "bearer"
    assert az["maxOutputTokens"] == {"gpt-4o": 4096}
    assert data["tiers"] == {"small": "fast"}
    assert data["routing"] == {"strategy": "random", "timeouts": {"read": 60}, "cooldown": 5}
    assert data["history"] == {"enabled": True, "storeBodies": False, "retentionDays": 0}


def test_save_is_atomic_and_private(tmp_path: Path) -> None:
    """save_config creates the directory, writes 0600 JSON, and leaves no temp files."""
    path = tmp_path / "deep" / "dir" / "config.json"
    cfg = rich_config()
    save_config(cfg, path)
    assert load_config(path) == cfg
    assert os.listdir(path.parent) == ["config.json"]
    assert path.read_text(encoding="utf-8").endswith("}\n")
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_save_replaces_existing_file(tmp_path: Path) -> None:
    """Saving over an existing file replaces its content (and tightens its permissions)."""
    path = tmp_path / "config.json"
    path.write_text("{}", encoding="utf-8")
    path.chmod(0o644)
    save_config(rich_config(), path)
    assert load_config(path) == rich_config()
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_save_refuses_invalid_config(tmp_path: Path) -> None:
    """An invalid configuration is not written, and the existing file is untouched."""
    path = tmp_path / "config.json"
    save_config(default_config(), path)
    before = path.read_bytes()
    bad = default_config()
    bad.server.port = 99999
    with pytest.raises(ConfigError, match=r"server\.port"):
        save_config(bad, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["config.json"]


def test_default_config_is_local_ollama() -> None:
    """The first-run default is one keyless Ollama provider, no aliases and no tiers."""
    cfg = default_config()
    (ollama,) = cfg.providers
    assert (ollama.name, ollama.kind, ollama.auth) == ("ollama", "ollama", "none")
    assert ollama.base_url == "http://127.0.0.1:11434/v1"
    assert ollama.api_keys == []
    assert not ollama.requires_key
    assert cfg.aliases == {}
    assert cfg.tiers == Tiers()


def test_load_or_create_missing_does_not_write(tmp_path: Path) -> None:
    """A missing file gives the default config, created=True, and writes nothing by default."""
    path = tmp_path / "config.json"
    cfg, created = load_or_create(path)
    assert created
    assert cfg == default_config()
    assert not path.exists()


def test_load_or_create_can_write_default(tmp_path: Path) -> None:
    """With write_default, the default config is saved and loads back."""
    path = tmp_path / "sub" / "config.json"
    cfg, created = load_or_create(path, write_default=True)
    assert created
    assert load_config(path) == cfg
    again, created_again = load_or_create(path)
    assert (again, created_again) == (cfg, False)


def test_load_or_create_keeps_invalid_file(tmp_path: Path) -> None:
    """An existing invalid file is an error and is never replaced by the default."""
    path = tmp_path / "config.json"
    path.write_text("{oops", encoding="utf-8")
    with pytest.raises(ConfigError):
        load_or_create(path, write_default=True)
    assert path.read_text(encoding="utf-8") == "{oops"


def test_first_run_message(tmp_path: Path) -> None:
    """The first-run message names the file and shows how to add a provider."""
    path = tmp_path / "config.json"
    message = first_run_message(path)
    assert str(path) in message
    assert '"providers"' in message
    assert "openrouter" in message


# --- history.prices ---------------------------------------------------------------------------


def test_history_prices_are_read_and_round_trip() -> None:
    """history.prices: USD per million tokens by provider:model, model or provider:*."""
    cfg = parse_config(
        {
            "providers": [provider(), {"name": "ollama", "kind": "ollama"}],
            "history": {
                "prices": {
                    "ollama:llama3:70b": {"input": 0.5, "output": 1, "cacheRead": 0.05},
                    "my-finetune": {"input": 3, "output": 12, "cacheWrite": 3.75},
                    "ollama:*": {"input": 0, "output": 0},
                }
            },
        },
        "x",
    )
    assert cfg.history.prices == {
        "ollama:llama3:70b": PriceOverride(0.5, 1.0, 0.05, None),
        "my-finetune": PriceOverride(3.0, 12.0, None, 3.75),
        "ollama:*": PriceOverride(0.0, 0.0),
    }
    data = dump_config(cfg)
    assert data["history"]["prices"] == {
        "ollama:llama3:70b": {"input": 0.5, "output": 1, "cacheRead": 0.05},
        "my-finetune": {"input": 3, "output": 12, "cacheWrite": 3.75},
        "ollama:*": {"input": 0, "output": 0},
    }
    assert parse_config(data, "again") == cfg
    assert "prices" not in dump_config(AppConfig())["history"]


def test_history_prices_problems() -> None:
    problems = problems_of(
        {
            "providers": [provider()],
            "history": {
                "prices": {
                    "a": {"input": -1, "output": "2"},
                    "b": {"output": 1},
                    "c": {"input": 1, "output": 1, "cachedRead": 1},
                    "d": 5,
                    "nope:*": {"input": 1, "output": 1},
                    "e": {"input": True, "output": 1},
                }
            },
        }
    )
    assert problems == [
        "history.prices.a.input: must be a price in USD per million tokens (a number >= 0), "
        "got the number -1",
        "history.prices.a.output: must be a price in USD per million tokens (a number >= 0), "
        "got the string '2'",
        "history.prices.b.input: missing (USD per million tokens)",
        "history.prices.c.cachedRead: unknown key (did you mean 'cacheRead'?)",
        "history.prices.d: must be an object, got the number 5",
        "history.prices[\"nope:*\"]: refers to unknown provider 'nope' (known: p)",
        "history.prices.e.input: must be a price in USD per million tokens (a number >= 0), "
        "got true",
    ]
