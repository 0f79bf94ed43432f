"""Model references → (provider, upstream model). Pure: no I/O, no secrets.

A client names a model in one of these ways, tried in this order:

1. `provider:model` — split at the first colon, and only when the prefix names a configured
   provider: `ollama:llama3:8b` is provider `ollama`, model `llama3:8b`.
2. `model@provider` — split at the last `@`, only when the suffix names a configured provider.
3. An alias from `aliases`; its target is itself a reference (loops are refused).
4. A bare name: every enabled provider whose `models` (or Azure `deployments`) list it.
5. A Claude tier name (`*opus*` → tiers.big, `*sonnet*` → tiers.middle, `*haiku*` → tiers.small,
   case-insensitive), when no provider serves the name itself and it is not an alias.

Explicit references (1, 2) reach any model of the provider, listed or not; that is the only way
to reach a provider with an empty `models` list. Disabled providers are never used.

`serve --provider NAME` (`only_providers`) and `serve -m MODEL` (`only_models`) restrict what is
exposed: `-m` takes references, each resolved once at start-up to the (provider, model) pairs it
stands for, and only those pairs can then be listed or served (aliases and tier names still
work when they lead to an allowed pair). `-m` is a restriction only: it never rewrites a request
for some other model into the `-m` model.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from desktop_proxy.config.models import AppConfig, ProviderConfig
from desktop_proxy.errors import DesktopProxyError

LIST_HINT = "List the available models with GET /v1/models or `desktop-proxy models`."

# Claude Code asks for models by family; these substrings pick a tier.
TIER_PATTERNS: tuple[tuple[str, str], ...] = (
    ("opus", "big"),
    ("sonnet", "middle"),
    ("haiku", "small"),
)


class UnknownModelError(DesktopProxyError):
    """No enabled, exposed provider can serve the requested model (a 404 for the client)."""

    def __init__(self, ref: str, message: str) -> None:
        super().__init__(message)
        self.ref = ref
        self.message = message


class RouterSetupError(DesktopProxyError):
    """`--provider` / `-m` name something that does not exist or is disabled."""


@dataclass(frozen=True, slots=True)
class Route:
    provider: ProviderConfig
    # The model name the upstream gets (Azure maps it to a deployment later, in the server).
    upstream_model: str
    # What the client asked for.
    requested: str
    # How the reference resolved: "explicit", "alias", "bare", "tier:big", ...
    via: str


@dataclass(frozen=True, slots=True)
class ModelEntry:
    id: str
    owned_by: str


def tier_for_name(name: str) -> str | None:
    """The tier a Claude-style model name maps to ('big', 'middle', 'small'), or None."""
    lowered = name.lower()
    for needle, tier in TIER_PATTERNS:
        if needle in lowered:
            return tier
    return None


def split_explicit(ref: str, provider_names: Iterable[str]) -> tuple[str, str] | None:
    """(provider, model) for `provider:model` or `model@provider` naming a known provider."""
    names = set(provider_names)
    prefix, colon, model = ref.partition(":")
    if colon and model and prefix in names:
        return prefix, model
    model, at, suffix = ref.rpartition("@")
    if at and model and suffix in names:
        return suffix, model
    return None


def provider_models(provider: ProviderConfig) -> list[str]:
    """The models a provider lists: `models`, then Azure deployment names not already there."""
    extra = [m for m in provider.deployments if m not in provider.models]
    return [*provider.models, *extra]


class ModelRouter:
    """Resolves model references against one configuration; build a new one when it changes."""

    def __init__(
        self,
        config: AppConfig,
        *,
        only_providers: Sequence[str] | None = None,
        only_models: Sequence[str] | None = None,
    ) -> None:
        self._config = config
        self._all_names = {p.name for p in config.providers}
        enabled = [p for p in config.providers if p.enabled]
        if only_providers:
            for name in only_providers:
                provider = config.provider(name)
                if provider is None:
                    known = ", ".join(p.name for p in config.providers) or "none"
                    raise RouterSetupError(
                        f"--provider {name}: no such provider (configured: {known})"
                    )
                if not provider.enabled:
                    raise RouterSetupError(
                        f"--provider {name}: the provider is disabled in the configuration"
                    )
            wanted = set(only_providers)
            enabled = [p for p in enabled if p.name in wanted]
        self._providers = enabled
        self._by_name = {p.name: p for p in enabled}
        self._restriction = self._describe_restriction(only_providers, only_models)
        # (provider, model) pairs `-m` allows, in the order given; None: no -m restriction.
        self._allowed: list[tuple[str, str]] | None = None
        if only_models:
            allowed: list[tuple[str, str]] = []
            for ref in only_models:
                try:
                    routes = self._lookup(ref, ref, "", (), restricted=False)
                except UnknownModelError as exc:
                    raise RouterSetupError(f"-m {ref}: {exc.message}") from None
                for route in routes:
                    pair = (route.provider.name, route.upstream_model)
                    if pair not in allowed:
                        allowed.append(pair)
            self._allowed = allowed

    @property
    def providers(self) -> list[ProviderConfig]:
        """The enabled providers this router may use (after `only_providers`)."""
        return list(self._providers)

    @property
    def restricted(self) -> bool:
        """True when `only_providers` or `only_models` narrow what is exposed."""
        return bool(self._restriction)

    def resolve(self, ref: str) -> Route:
        """The first route for `ref`.

        Raises:
            UnknownModelError: nothing can serve `ref`; the message says how to list models.
        """
        return self.candidates(ref)[0]

    def candidates(self, ref: str) -> list[Route]:
        """Every route that could serve `ref`, in failover order; never empty.

        Providers appear in configuration order, except that those with `weight` 0 come last
        (standbys). The weights themselves are for the rotation strategy that picks among them.

        Raises:
            UnknownModelError: nothing can serve `ref`.
        """
        return self._lookup(ref, ref, "", (), restricted=True)

    def list_models(self) -> list[ModelEntry]:
        """`provider:model` for every listed (and exposed) model, then the usable aliases."""
        entries: list[ModelEntry] = []
        seen: set[str] = set()

        def add(entry: ModelEntry) -> None:
            if entry.id not in seen:
                seen.add(entry.id)
                entries.append(entry)

        for provider in self._providers:
            for model in provider_models(provider):
                if self._allows(provider.name, model):
                    add(ModelEntry(f"{provider.name}:{model}", provider.name))
        for name, model in self._allowed or ():
            add(ModelEntry(f"{name}:{model}", name))
        for alias in self._config.aliases:
            try:
                self.candidates(alias)
            except UnknownModelError:
                continue
            add(ModelEntry(alias, "alias"))
        return entries

    # --- internals ----------------------------------------------------------------------------

    def _allows(self, provider: str, model: str) -> bool:
        return self._allowed is None or (provider, model) in self._allowed

    def _lookup(
        self,
        ref: str,
        requested: str,
        via: str,
        seen: tuple[str, ...],
        *,
        restricted: bool,
        allow_tier: bool = True,
    ) -> list[Route]:
        if not ref.strip():
            raise UnknownModelError(requested, f"No model was given. {LIST_HINT}")

        explicit = split_explicit(ref, self._all_names)
        if explicit is not None:
            name, model = explicit
            provider = self._by_name.get(name)
            if provider is None:
                configured = self._config.provider(name)
                why = (
                    f"provider '{name}' is disabled"
                    if configured is not None and not configured.enabled
                    else f"provider '{name}' is not exposed by this gateway{self._restriction}"
                )
                raise self._error(requested, ref, why)
            if restricted and not self._allows(name, model):
                raise self._error(requested, ref, f"it is not exposed{self._restriction}")
            return [Route(provider, model, requested, via or "explicit")]

        target = self._config.aliases.get(ref)
        if target is not None:
            if ref in seen:
                loop = " → ".join([*seen[seen.index(ref) :], ref])
                raise UnknownModelError(
                    requested, f"The model '{requested}' cannot be resolved: alias loop {loop}."
                )
            return self._lookup(
                target,
                requested,
                via or "alias",
                (*seen, ref),
                restricted=restricted,
                allow_tier=allow_tier,
            )

        routes = [
            Route(p, ref, requested, via or "bare")
            for p in self._providers
            if ref in provider_models(p) and (not restricted or self._allows(p.name, ref))
        ]
        if routes:
            # Stable sort: configuration order, standbys (weight 0) last.
            return sorted(routes, key=lambda r: r.provider.weight == 0)

        tier = tier_for_name(ref) if allow_tier else None
        tier_target = getattr(self._config.tiers, tier) if tier else None
        if tier_target is not None:
            return self._lookup(
                tier_target,
                requested,
                via or f"tier:{tier}",
                (*seen, ref),
                restricted=restricted,
                allow_tier=False,
            )

        raise self._error(requested, ref, self._why_unknown(ref, restricted))

    def _why_unknown(self, ref: str, restricted: bool) -> str:
        listed_anywhere = any(ref in provider_models(p) for p in self._config.providers)
        if restricted and any(ref in provider_models(p) for p in self._providers):
            return f"it is not exposed{self._restriction}"
        if listed_anywhere:
            return "the providers that list it are disabled or not exposed"
        known = [m for p in self._providers for m in provider_models(p) if self._allows(p.name, m)]
        close = difflib.get_close_matches(ref, [*known, *self._config.aliases], n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        prefix, colon, _ = ref.partition(":")
        if colon and prefix:
            return f"no provider lists it and there is no provider named '{prefix}'{hint}"
        tier = tier_for_name(ref)
        if tier is not None and getattr(self._config.tiers, tier) is None:
            return (
                f"no configured provider lists it, and tiers.{tier} is not set (Claude model "
                "names map to tiers: opus → big, sonnet → middle, haiku → small)"
            )
        return f"no configured provider lists it{hint}"

    def _error(self, requested: str, ref: str, why: str) -> UnknownModelError:
        target = f" ('{ref}')" if ref != requested else ""
        return UnknownModelError(
            requested, f"The model '{requested}'{target} is not available: {why}. {LIST_HINT}"
        )

    @staticmethod
    def _describe_restriction(
        only_providers: Sequence[str] | None, only_models: Sequence[str] | None
    ) -> str:
        parts = []
        if only_providers:
            parts.append("--provider " + ", ".join(only_providers))
        if only_models:
            parts.append("-m " + ", ".join(only_models))
        return f" (restricted with {'; '.join(parts)})" if parts else ""
