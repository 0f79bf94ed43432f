from __future__ import annotations

import dataclasses

import pytest

from desktop_proxy.config.presets import PRESETS, get_preset

EXPECTED_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com/v1beta/openai",
    "openrouter": "https://openrouter.ai/api/v1",
    "groq": "https://api.groq.com/openai/v1",
    "together": "https://api.together.xyz/v1",
    "cohere": "https://api.cohere.ai/compatibility/v1",
    "deepseek": "https://api.deepseek.com/v1",
    "mistral": "https://api.mistral.ai/v1",
    "ollama": "http://127.0.0.1:11434/v1",
    "lmstudio": "http://127.0.0.1:1234/v1",
    "azure": None,
    "openai-compatible": None,
    "anthropic-compatible": None,
}


@pytest.mark.parametrize(("kind", "url"), EXPECTED_URLS.items())
def test_preset_base_urls(kind: str, url: str | None) -> None:
    """Each required kind exists and carries its documented default base URL (or none)."""
    preset = get_preset(kind)
    assert preset is not None
    assert preset.kind == kind
    assert preset.base_url == url


def test_no_unexpected_kinds() -> None:
    """The preset table holds exactly the documented kinds."""
    assert set(PRESETS) == set(EXPECTED_URLS)


def test_anthropic_speaks_messages_with_x_api_key() -> None:
    """Anthropic presets use the anthropic wire protocol and the x-api-key header."""
    for kind in ("anthropic", "anthropic-compatible"):
        preset = PRESETS[kind]
        assert (preset.protocol, preset.auth) == ("anthropic", "x-api-key")


def test_openai_style_presets_use_bearer() -> None:
    """Hosted OpenAI-compatible vendors use the openai protocol with a bearer token."""
    kinds = ("openai", "gemini", "openrouter", "groq", "together", "cohere", "deepseek", "mistral")
    for kind in (*kinds, "openai-compatible"):
        preset = PRESETS[kind]
        assert (preset.protocol, preset.auth) == ("openai", "bearer"), kind


def test_local_presets_need_no_key() -> None:
    """Ollama and LM Studio are local, send no auth and need no key."""
    for kind in ("ollama", "lmstudio"):
        preset = PRESETS[kind]
        assert preset.local
        assert preset.auth == "none"
        assert not preset.requires_key
        assert preset.key_env is None


def test_azure_uses_api_key_header() -> None:
    """Azure authenticates with the api-key header and reads AZURE_OPENAI_API_KEY."""
    azure = PRESETS["azure"]
    assert azure.auth == "api-key"
    assert azure.requires_key
    assert azure.key_env == "AZURE_OPENAI_API_KEY"


def test_hosted_presets_name_their_conventional_env_var() -> None:
    """Every preset that requires a key names the env var its vendor's SDK reads."""
    assert PRESETS["openai"].key_env == "OPENAI_API_KEY"
    assert PRESETS["anthropic"].key_env == "ANTHROPIC_API_KEY"
    for preset in PRESETS.values():
        if preset.requires_key:
            assert preset.key_env and preset.key_env.isupper(), preset.kind
            assert preset.auth != "none", preset.kind


def test_generic_presets_make_keys_optional() -> None:
    """Generic compatible kinds send a key when given one but do not require it."""
    for kind in ("openai-compatible", "anthropic-compatible"):
        preset = PRESETS[kind]
        assert not preset.requires_key
        assert preset.key_env is None
        assert preset.auth != "none"


def test_unknown_kind_is_none() -> None:
    """get_preset answers None for a kind that does not exist."""
    assert get_preset("opneai") is None


def test_presets_are_frozen() -> None:
    """Presets cannot be modified in place."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["openai"].base_url = "http://evil"  # type: ignore[misc]


def test_default_models_are_tuples_of_names() -> None:
    """Suggested models are immutable tuples of non-empty names."""
    for preset in PRESETS.values():
        assert isinstance(preset.default_models, tuple)
        assert all(isinstance(m, str) and m for m in preset.default_models)
        assert preset.label
