"""Provider presets: what `kind` fills in for a provider (base URL, wire protocol, auth style).

A preset is a starting point, never a constraint: every field it fills can be overridden in the
provider's own config entry. The `openai` and `anthropic` kinds double as generic kinds for any
compatible server when the user gives their own `baseUrl`; `openai-compatible` and
`anthropic-compatible` say the same thing explicitly and have no default URL.

`default_models` are suggestions for a new provider entry (settings UI, `desktop-proxy providers`);
the loader never fills `models` from them, since model line-ups change faster than releases.
"""

from __future__ import annotations

from dataclasses import dataclass

from desktop_proxy.config.models import AuthStyle, WireProtocol


@dataclass(frozen=True, slots=True)
class Preset:
    kind: str
    label: str
    # None: the user must give `baseUrl` (Azure, generic compatible servers).
    base_url: str | None
    protocol: WireProtocol
    auth: AuthStyle
    requires_key: bool
    # The environment variable the vendor's own SDKs read, e.g. OPENAI_API_KEY.
    key_env: str | None
    default_models: tuple[str, ...] = ()
    notes: str = ""
    # Runs on the user's machine (Ollama, LM Studio).
    local: bool = False


_PRESET_LIST: tuple[Preset, ...] = (
    Preset(
        kind="openai",
        label="OpenAI",
        base_url="https://api.openai.com/v1",
        protocol="openai",
        auth="bearer",
        requires_key=True,
        key_env="OPENAI_API_KEY",
        default_models=("gpt-4.1", "gpt-4.1-mini", "gpt-4o", "gpt-4o-mini"),
        notes="Also any OpenAI-compatible server when baseUrl is set.",
    ),
    Preset(
        kind="anthropic",
        label="Anthropic",
        base_url="https://api.anthropic.com",
        protocol="anthropic",
        auth="x-api-key",
        requires_key=True,
        key_env="ANTHROPIC_API_KEY",
        default_models=("claude-opus-4-1", "claude-sonnet-4-5", "claude-haiku-4-5"),
        notes="Messages API. Also any Anthropic-compatible server when baseUrl is set.",
    ),
    Preset(
        kind="gemini",
        label="Google Gemini",
        base_url="https://generativelanguage.googleapis.com/v1beta/openai",
        protocol="openai",
        auth="bearer",
        requires_key=True,
        key_env="GEMINI_API_KEY",
        default_models=("gemini-2.5-pro", "gemini-2.5-flash"),
        notes="Gemini's OpenAI-compatible endpoint; API key from Google AI Studio.",
    ),
    Preset(
        kind="openrouter",
        label="OpenRouter",
        base_url="https://openrouter.ai/api/v1",
        protocol="openai",
        auth="bearer",
        requires_key=True,
        key_env="OPENROUTER_API_KEY",
        default_models=("openai/gpt-4o-mini", "anthropic/claude-sonnet-4.5"),
        notes="Model ids are vendor/model.",
    ),
    Preset(
        kind="groq",
        label="Groq",
        base_url="https://api.groq.com/openai/v1",
        protocol="openai",
        auth="bearer",
        requires_key=True,
        key_env="GROQ_API_KEY",
        default_models=("llama-3.3-70b-versatile", "llama-3.1-8b-instant"),
        notes="Rejects some OpenAI fields (e.g. logprobs, n > 1).",
    ),
    Preset(
        kind="together",
        label="Together AI",
        base_url="https://api.together.xyz/v1",
        protocol="openai",
        auth="bearer",
        requires_key=True,
        key_env="TOGETHER_API_KEY",
        default_models=("meta-llama/Llama-3.3-70B-Instruct-Turbo",),
    ),
    Preset(
        kind="cohere",
        label="Cohere",
        base_url="https://api.cohere.ai/compatibility/v1",
        protocol="openai",
        auth="bearer",
        requires_key=True,
        key_env="CO_API_KEY",
        default_models=("command-a-03-2025", "command-r-plus"),
        notes="Cohere's OpenAI compatibility endpoint.",
    ),
    Preset(
        kind="deepseek",
        label="DeepSeek",
        base_url="https://api.deepseek.com/v1",
        protocol="openai",
        auth="bearer",
        requires_key=True,
        key_env="DEEPSEEK_API_KEY",
        default_models=("deepseek-chat", "deepseek-reasoner"),
        notes="deepseek-reasoner returns reasoning_content that must not be sent back.",
    ),
    Preset(
        kind="mistral",
        label="Mistral AI",
        base_url="https://api.mistral.ai/v1",
        protocol="openai",
        auth="bearer",
        requires_key=True,
        key_env="MISTRAL_API_KEY",
        default_models=("mistral-large-latest", "mistral-small-latest", "codestral-latest"),
    ),
    Preset(
        kind="ollama",
        label="Ollama (local)",
        base_url="http://127.0.0.1:11434/v1",
        protocol="openai",
        auth="none",
        requires_key=False,
        key_env=None,
        notes="Local server; no key. Model names look like llama3:8b.",
        local=True,
    ),
    Preset(
        kind="lmstudio",
        label="LM Studio (local)",
        base_url="http://127.0.0.1:1234/v1",
        protocol="openai",
        auth="none",
        requires_key=False,
        key_env=None,
        notes="Local server; no key. Start the server from LM Studio's Developer tab.",
        local=True,
    ),
    Preset(
        kind="azure",
        label="Azure OpenAI",
        base_url=None,
        protocol="openai",
        auth="api-key",
        requires_key=True,
        key_env="AZURE_OPENAI_API_KEY",
        notes=(
            "baseUrl is https://{resource}.openai.azure.com; apiVersion is required unless "
            "baseUrl is the v1 API (ending in /openai/v1). deployments maps model -> deployment."
        ),
    ),
    Preset(
        kind="openai-compatible",
        label="OpenAI-compatible server",
        base_url=None,
        protocol="openai",
        auth="bearer",
        requires_key=False,
        key_env=None,
        notes="Any server speaking OpenAI Chat Completions (vLLM, llama.cpp, LiteLLM, ...).",
    ),
    Preset(
        kind="anthropic-compatible",
        label="Anthropic-compatible server",
        base_url=None,
        protocol="anthropic",
        auth="x-api-key",
        requires_key=False,
        key_env=None,
        notes="Any server speaking the Anthropic Messages API.",
    ),
)

PRESETS: dict[str, Preset] = {p.kind: p for p in _PRESET_LIST}


def get_preset(kind: str) -> Preset | None:
    """The preset for `kind`, or None when the kind is unknown."""
    return PRESETS.get(kind)
