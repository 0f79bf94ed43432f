from __future__ import annotations

from typing import Any

import pytest

from desktop_proxy.config.loader import parse_config
from desktop_proxy.config.models import AppConfig, ProviderConfig, Tiers
from desktop_proxy.routing import (
    ModelEntry,
    ModelRouter,
    RouterSetupError,
    UnknownModelError,
    split_explicit,
    tier_for_name,
)


def make_config(**extra: Any) -> AppConfig:
    data: dict[str, Any] = {
        "providers": [
            {"name": "openai", "kind": "openai", "models": ["gpt-4o", "gpt-4o-mini"]},
            {"name": "ollama", "kind": "ollama", "models": ["llama3:8b", "gpt-4o"]},
            {"name": "anthropic", "kind": "anthropic", "models": ["claude-sonnet-4-5"]},
            {"name": "spare", "kind": "openrouter", "models": []},
        ],
        "aliases": {"fast": "openai:gpt-4o-mini", "quick": "fast", "local": "llama3:8b"},
        "tiers": {"big": "openai:gpt-4o", "small": "ollama:llama3:8b"},
    }
    data.update(extra)
    return parse_config(data, "test")


def pairs(routes: list[Any]) -> list[tuple[str, str]]:
    return [(r.provider.name, r.upstream_model) for r in routes]


# --- reference forms --------------------------------------------------------------------------


def test_provider_colon_model_splits_at_first_colon() -> None:
    """`ollama:llama3:8b` goes to provider ollama with model `llama3:8b`."""
    route = ModelRouter(make_config()).resolve("ollama:llama3:8b")
    assert (route.provider.name, route.upstream_model) == ("ollama", "llama3:8b")
    assert (route.requested, route.via) == ("ollama:llama3:8b", "explicit")


def test_bare_name_with_colon_is_not_a_provider_reference() -> None:
    """`llama3:8b` is a bare name because `llama3` is not a provider."""
    route = ModelRouter(make_config()).resolve("llama3:8b")
    assert (route.provider.name, route.upstream_model, route.via) == ("ollama", "llama3:8b", "bare")


def test_model_at_provider() -> None:
    """`model@provider` names the provider after the last @."""
    route = ModelRouter(make_config()).resolve("llama3:8b@ollama")
    assert (route.provider.name, route.upstream_model, route.via) == (
        "ollama",
        "llama3:8b",
        "explicit",
    )


def test_at_sign_not_naming_a_provider_is_part_of_the_model() -> None:
    """A model name containing @ stays whole when the suffix is no provider."""
    cfg = make_config()
    cfg.providers[0].models.append("claude-3@20240229")
    route = ModelRouter(cfg).resolve("claude-3@20240229")
    assert route.upstream_model == "claude-3@20240229"


def test_explicit_reference_reaches_unlisted_models() -> None:
    """Explicit references reach any model, including on a provider with an empty list."""
    router = ModelRouter(make_config())
    assert router.resolve("spare:meta/llama-4").upstream_model == "meta/llama-4"
    assert router.resolve("openai:o3").upstream_model == "o3"


def test_empty_models_list_takes_no_bare_names() -> None:
    """A provider with no models listed is not used for bare names."""
    cfg = make_config(
        providers=[{"name": "spare", "kind": "openrouter", "models": []}], aliases={}, tiers={}
    )
    with pytest.raises(UnknownModelError):
        ModelRouter(cfg).resolve("meta/llama-4")


def test_alias_and_alias_chain() -> None:
    """Aliases resolve to their target, through chains, and remember what was asked."""
    router = ModelRouter(make_config())
    route = router.resolve("quick")
    assert (route.provider.name, route.upstream_model) == ("openai", "gpt-4o-mini")
    assert (route.requested, route.via) == ("quick", "alias")


def test_alias_loop_is_an_error_not_a_recursion() -> None:
    """An alias loop (possible in a hand-built config) fails cleanly."""
    cfg = make_config()
    cfg.aliases = {"a": "b", "b": "a"}
    with pytest.raises(UnknownModelError, match="alias loop a → b → a"):
        ModelRouter(cfg).resolve("a")


def test_bare_name_first_enabled_provider_and_all_candidates() -> None:
    """A bare name goes to the first provider listing it; candidates lists all in order."""
    router = ModelRouter(make_config())
    assert router.resolve("gpt-4o").provider.name == "openai"
    assert pairs(router.candidates("gpt-4o")) == [("openai", "gpt-4o"), ("ollama", "gpt-4o")]
    assert {r.via for r in router.candidates("gpt-4o")} == {"bare"}


def test_disabled_providers_are_skipped() -> None:
    """Disabled providers serve nothing, not even explicit references."""
    cfg = make_config()
    cfg.providers[0].enabled = False
    router = ModelRouter(cfg)
    assert pairs(router.candidates("gpt-4o")) == [("ollama", "gpt-4o")]
    with pytest.raises(UnknownModelError, match="provider 'openai' is disabled"):
        router.resolve("openai:gpt-4o")


def test_weight_zero_providers_come_last() -> None:
    """Providers with weight 0 are standbys placed after the weighted ones."""
    cfg = make_config()
    cfg.providers[0].weight = 0
    assert pairs(ModelRouter(cfg).candidates("gpt-4o")) == [
        ("ollama", "gpt-4o"),
        ("openai", "gpt-4o"),
    ]


def test_azure_deployments_count_as_listed_models() -> None:
    """An Azure provider serves the models named in its deployments map."""
    cfg = parse_config(
        {
            "providers": [
                {
                    "name": "az",
                    "kind": "azure",
                    "baseUrl": "https://r.openai.azure.com/openai/v1",
                    "deployments": {"gpt-4o": "prod-4o"},
                }
            ]
        },
        "t",
    )
    route = ModelRouter(cfg).resolve("gpt-4o")
    assert (route.provider.name, route.upstream_model) == ("az", "gpt-4o")
    assert ModelRouter(cfg).list_models() == [ModelEntry("az:gpt-4o", "az")]


# --- tiers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected", "via"),
    [
        ("claude-opus-4-1", ("openai", "gpt-4o"), "tier:big"),
        ("Claude-3-OPUS", ("openai", "gpt-4o"), "tier:big"),
        ("claude-3-5-haiku-20241022", ("ollama", "llama3:8b"), "tier:small"),
    ],
)
def test_claude_tier_names(name: str, expected: tuple[str, str], via: str) -> None:
    """opus/haiku names (any case) map to tiers.big/tiers.small when nobody lists them."""
    route = ModelRouter(make_config()).resolve(name)
    assert (route.provider.name, route.upstream_model) == expected
    assert (route.requested, route.via) == (name, via)


def test_listed_claude_name_beats_tier() -> None:
    """A provider that lists the Claude name itself is used instead of the tier."""
    cfg = make_config(tiers={"middle": "openai:gpt-4o"})
    route = ModelRouter(cfg).resolve("claude-sonnet-4-5")
    assert (route.provider.name, route.via) == ("anthropic", "bare")


def test_alias_beats_tier() -> None:
    """An alias with a Claude-like name is used as an alias, not as a tier."""
    cfg = make_config()
    cfg.aliases["claude-opus-4"] = "ollama:llama3:8b"
    route = ModelRouter(cfg).resolve("claude-opus-4")
    assert (route.provider.name, route.via) == ("ollama", "alias")


def test_unset_tier_says_which_tier() -> None:
    """A Claude name whose tier is not configured explains the missing tier."""
    with pytest.raises(UnknownModelError, match=r"tiers\.middle is not set"):
        ModelRouter(make_config()).resolve("claude-3-sonnet")


def test_tier_target_is_not_tier_mapped_again() -> None:
    """A tier pointing at another unlisted Claude name fails instead of recursing."""
    cfg = make_config()
    cfg.tiers = Tiers(big="claude-opus-x")
    with pytest.raises(UnknownModelError):
        ModelRouter(cfg).resolve("claude-opus-4")


def test_tier_for_name() -> None:
    """tier_for_name maps family names case-insensitively."""
    assert [tier_for_name(n) for n in ("x-OPUS", "sonnet", "claude-haiku", "gpt")] == [
        "big",
        "middle",
        "small",
        None,
    ]


def test_split_explicit() -> None:
    """split_explicit only splits when the provider part names a known provider."""
    names = {"ollama", "openai"}
    assert split_explicit("ollama:llama3:8b", names) == ("ollama", "llama3:8b")
    assert split_explicit("gpt-4o@openai", names) == ("openai", "gpt-4o")
    assert split_explicit("llama3:8b", names) is None
    assert split_explicit("ollama:", names) is None


# --- errors -----------------------------------------------------------------------------------


def test_unknown_model_message_says_how_to_list() -> None:
    """Unknown models raise UnknownModelError whose message points to the model list."""
    with pytest.raises(UnknownModelError) as info:
        ModelRouter(make_config()).resolve("gpt-4")
    assert info.value.ref == "gpt-4"
    assert "GET /v1/models or `desktop-proxy models`" in info.value.message
    assert "did you mean" in info.value.message


def test_unknown_provider_prefix() -> None:
    """A colon reference whose prefix is no provider and that nobody lists is unknown."""
    with pytest.raises(UnknownModelError, match="no provider named 'foo'"):
        ModelRouter(make_config()).resolve("foo:bar")


def test_empty_model_name() -> None:
    """An empty model name is reported as missing."""
    with pytest.raises(UnknownModelError, match="No model was given"):
        ModelRouter(make_config()).resolve("")


def test_alias_to_disabled_provider_names_the_target() -> None:
    """When an alias's target cannot be served, the message names both."""
    cfg = make_config()
    cfg.providers[0].enabled = False
    with pytest.raises(UnknownModelError, match=r"'fast' \('openai:gpt-4o-mini'\)"):
        ModelRouter(cfg).resolve("fast")


# --- listing ----------------------------------------------------------------------------------


def test_list_models() -> None:
    """list_models gives provider:model for every listed model, then aliases."""
    assert ModelRouter(make_config()).list_models() == [
        ModelEntry("openai:gpt-4o", "openai"),
        ModelEntry("openai:gpt-4o-mini", "openai"),
        ModelEntry("ollama:llama3:8b", "ollama"),
        ModelEntry("ollama:gpt-4o", "ollama"),
        ModelEntry("anthropic:claude-sonnet-4-5", "anthropic"),
        ModelEntry("fast", "alias"),
        ModelEntry("quick", "alias"),
        ModelEntry("local", "alias"),
    ]


def test_list_models_skips_disabled_and_unusable_aliases() -> None:
    """Disabled providers' models and aliases that lead nowhere are not listed."""
    cfg = make_config()
    cfg.providers[0].enabled = False
    ids = [e.id for e in ModelRouter(cfg).list_models()]
    assert "openai:gpt-4o" not in ids
    assert "fast" not in ids and "quick" not in ids
    assert "local" in ids


# --- restrictions -----------------------------------------------------------------------------


def test_only_providers_restricts_resolution_and_listing() -> None:
    """serve --provider exposes only the named providers."""
    router = ModelRouter(make_config(), only_providers=["ollama"])
    assert pairs(router.candidates("gpt-4o")) == [("ollama", "gpt-4o")]
    assert [e.id for e in router.list_models()] == ["ollama:llama3:8b", "ollama:gpt-4o", "local"]
    with pytest.raises(UnknownModelError, match="not exposed"):
        router.resolve("openai:gpt-4o")
    assert router.restricted
    assert [p.name for p in router.providers] == ["ollama"]


def test_only_providers_must_exist_and_be_enabled() -> None:
    """--provider naming a missing or disabled provider is a setup error."""
    with pytest.raises(RouterSetupError, match="no such provider"):
        ModelRouter(make_config(), only_providers=["nope"])
    cfg = make_config()
    cfg.providers[1].enabled = False
    with pytest.raises(RouterSetupError, match="disabled"):
        ModelRouter(cfg, only_providers=["ollama"])


def test_only_models_exposes_just_that_model() -> None:
    """serve -m openai:gpt-4o serves and lists only that model."""
    router = ModelRouter(make_config(), only_models=["openai:gpt-4o"])
    assert [e.id for e in router.list_models()] == ["openai:gpt-4o"]
    assert pairs(router.candidates("gpt-4o")) == [("openai", "gpt-4o")]
    with pytest.raises(UnknownModelError, match="restricted with -m openai:gpt-4o"):
        router.resolve("gpt-4o-mini")
    with pytest.raises(UnknownModelError, match="not exposed"):
        router.resolve("ollama:gpt-4o")


def test_only_models_is_not_a_default_model() -> None:
    """-m restricts; it does not answer requests for other models with the -m model."""
    router = ModelRouter(make_config(), only_models=["openai:gpt-4o"])
    with pytest.raises(UnknownModelError):
        router.resolve("llama3:8b")


def test_only_models_allows_unlisted_explicit_model() -> None:
    """-m may expose a model the provider does not list, and it is then listed."""
    router = ModelRouter(make_config(), only_models=["spare:meta/llama-4"])
    assert [e.id for e in router.list_models()] == ["spare:meta/llama-4"]
    assert router.resolve("spare:meta/llama-4").upstream_model == "meta/llama-4"


def test_only_models_with_alias_and_tier() -> None:
    """An -m alias exposes its target; tier names leading to an allowed pair still work."""
    router = ModelRouter(make_config(), only_models=["fast"])
    assert [e.id for e in router.list_models()] == ["openai:gpt-4o-mini", "fast", "quick"]
    cfg = make_config(tiers={"middle": "fast"})
    router = ModelRouter(cfg, only_models=["fast"])
    route = router.resolve("claude-sonnet-4-5")
    assert (route.provider.name, route.upstream_model, route.via) == (
        "openai",
        "gpt-4o-mini",
        "tier:middle",
    )


def test_only_models_unknown_reference_is_a_setup_error() -> None:
    """-m naming a model nothing can serve is a setup error."""
    with pytest.raises(RouterSetupError, match="-m gpt-9"):
        ModelRouter(make_config(), only_models=["gpt-9"])


def test_route_holds_the_provider_config() -> None:
    """A route carries the provider's config object itself."""
    cfg = make_config()
    route = ModelRouter(cfg).resolve("openai:gpt-4o")
    assert isinstance(route.provider, ProviderConfig)
    assert route.provider is cfg.providers[0]
