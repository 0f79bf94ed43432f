"""What a request cost, priced by the model that RAN (the record's provider + model).

Prices come from `genai-prices` (pydantic/genai-prices), whose price data ships inside the
package. Only the bundled snapshot is used: this module never starts the library's
`UpdatePrices` network fetcher, so pricing works offline and never touches the network.

Token semantics. Our records use Anthropic semantics: `input_tokens` EXCLUDES cached tokens;
`cache_read_tokens` and `cache_write_tokens` are separate buckets; `output_tokens` includes
reasoning tokens. genai-prices wants `input_tokens` as the TOTAL input (uncached + cache read +
cache write) with the cache buckets as partitions of it, so `price()` adds them up before the
call. Each bucket is then charged at its own rate (cache reads and writes at the model's cache
prices, falling back to the input price where a model has none). Reasoning tokens are passed as
the library's `output_reasoning_tokens`, a part of output: they cost the output price except on
the few models that list a reasoning price. Prices apply as they were at the request's time
(the library knows dated price changes), and tiered prices (e.g. above 200k input tokens) look
at the total input, cached tokens included, as the providers bill them.

Speed: the library takes about 0.1 ms per call, in a thread that shares the GIL with the event
loop, so each model's per-token rates are derived from the library once per hour and price
bracket, and later requests cost a few multiplications (see `_ModelInfo`).

Resolution order for a (provider, model) pair:
1. a price override from config (`history.prices`): "provider:model", then "model", then
   "provider:*";
2. local providers (kind `ollama`, `lmstudio`) cost $0;
3. genai-prices, with the provider's kind mapped to the library's provider id (a custom base URL
   is matched against the library's provider API URL patterns instead);
4. otherwise the request is `unpriced`: cost None and a flag, never a silent $0.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

from desktop_proxy.config.models import AppConfig, PriceOverride, ProviderConfig
from desktop_proxy.config.presets import get_preset
from desktop_proxy.history.record import RecordValues, RequestRecord

if TYPE_CHECKING:
    from genai_prices import Usage
    from genai_prices.data_snapshot import DataSnapshot
    from genai_prices.types import ModelInfo, Provider

log = logging.getLogger(__name__)

PER_MILLION = 1_000_000

# Our provider kinds → genai-prices provider ids. None: no library pricing (local or generic).
PROVIDER_IDS: dict[str, str | None] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "google",
    "openrouter": "openrouter",
    "groq": "groq",
    "together": "together",
    "cohere": "cohere",
    "deepseek": "deepseek",
    "mistral": "mistral",
    "azure": "azure",
    "ollama": None,
    "lmstudio": None,
    "openai-compatible": None,
    "anthropic-compatible": None,
}

LOCAL_KINDS = frozenset({"ollama", "lmstudio"})

SOURCE_OVERRIDE = "config"
SOURCE_LOCAL = "local"
SOURCE_RECORD = "record"


@functools.cache
def library_source() -> str:
    """'genai-prices X.Y.Z': the price source stored with each priced request."""
    try:
        from genai_prices import __version__
    except Exception:  # pragma: no cover - the dependency is required
        return "genai-prices"
    return f"genai-prices {__version__}"


class Price(NamedTuple):
    """The cost of one request.

    `cost_usd` is None when nothing could be priced: either there was no usage at all
    (`unpriced` False: e.g. a request rejected before reaching an upstream) or no price is known
    for the model (`unpriced` True).
    """

    cost_usd: float | None
    unpriced: bool = False
    source: str | None = None

    @staticmethod
    def none() -> Price:
        return _NO_PRICE


# Shared: most records get one of these.
_NO_PRICE = Price(None, False, None)
_UNKNOWN_PRICE = Price(None, True, None)
_LOCAL_PRICE = Price(0.0, False, SOURCE_LOCAL)


def override_cost(
    price: PriceOverride, input_tokens: int, output_tokens: int, cache_read: int, cache_write: int
) -> float:
    """Cost in USD of the given token counts (Anthropic semantics) at an override's prices."""
    cache_read_price = price.input if price.cache_read is None else price.cache_read
    cache_write_price = price.input if price.cache_write is None else price.cache_write
    total = (
        input_tokens * price.input
        + output_tokens * price.output
        + cache_read * cache_read_price
        + cache_write * cache_write_price
    )
    return total / PER_MILLION


_loaded = threading.Event()  # the price data is in memory: pricing no longer blocks
_warming = threading.Lock()  # taken for good by the first background warm-up


def _snapshot() -> DataSnapshot:
    # The bundled snapshot only: `get_snapshot()` returns it unless some code in this process
    # installed a custom one (we never start `UpdatePrices`).
    from genai_prices.data_snapshot import get_snapshot

    snapshot = get_snapshot()
    _loaded.set()
    return snapshot


def _clean_model(model: str) -> str:
    model = model.strip()
    # Gemini's native names come as "models/gemini-…".
    return model.removeprefix("models/")


class _Tokens(NamedTuple):
    """Token counts in our (Anthropic) semantics: `inp` excludes the cache buckets; `out`
    includes `reasoning`."""

    inp: int
    out: int
    cache_read: int
    cache_write: int
    reasoning: int = 0

    @property
    def total_input(self) -> int:
        return self.inp + self.cache_read + self.cache_write

    def usage(self) -> Usage:
        """The genai-prices form: input_tokens is the TOTAL input, the cache buckets are parts
        of it; output_reasoning_tokens is part of output_tokens."""
        from genai_prices import Usage

        values: dict[str, int] = {
            "input_tokens": self.total_input,
            "cache_read_tokens": self.cache_read,
            "cache_write_tokens": self.cache_write,
            "output_tokens": self.out,
        }
        if self.reasoning:
            values["output_reasoning_tokens"] = self.reasoning
        return Usage(**values)


@dataclass(frozen=True, slots=True)
class _Rates:
    """USD per token in one price bracket (for tiered models: one range of total input)."""

    inp: float
    cache_read: float
    cache_write: float
    out: float
    reasoning: float

    def cost(self, t: _Tokens) -> float:
        return (
            t.inp * self.inp
            + t.cache_read * self.cache_read
            + t.cache_write * self.cache_write
            + (t.out - t.reasoning) * self.out
            + t.reasoning * self.reasoning
        )


@dataclass(slots=True)
class _ModelInfo:
    """A model's prices at one moment, and what is needed to price quickly.

    Within a bracket of total input (tiered prices switch at `tier_starts`) the library's price
    is linear in each token bucket, so five library calls per bracket give per-token rates and
    every later request costs a few multiplications instead of ~0.1 ms of library work (the
    writer shares the GIL with the event loop). Prices with a per-request fee are not linear:
    those go to the library every time.
    """

    provider: Provider
    model: ModelInfo
    moment: datetime
    tier_starts: tuple[int, ...]
    linear: bool
    rates: dict[int, _Rates]

    @classmethod
    def build(cls, provider: Provider, model: ModelInfo, moment: datetime) -> _ModelInfo:
        from genai_prices.types import TieredPrices

        prices = model.get_prices(moment)
        values = [v for k, v in vars(prices).items() if v is not None and not k.startswith("_")]
        starts = sorted(
            {tier.start for v in values if isinstance(v, TieredPrices) for tier in v.tiers}
        )
        linear = getattr(prices, "requests_kcount", None) is None
        return cls(provider, model, moment, tuple(starts), linear, {})


def _calc(info: _ModelInfo, tokens: _Tokens) -> Decimal:
    calc = info.model.calc_price(tokens.usage(), info.provider, genai_request_timestamp=info.moment)
    return calc.total_price


def _derive_rates(info: _ModelInfo, total_input: int) -> _Rates:
    """Per-token rates in the bracket of `total_input` (> 0), from the library itself."""
    t = total_input
    base = _calc(info, _Tokens(t, 0, 0, 0))
    with_out = _calc(info, _Tokens(t, t, 0, 0))
    with_reasoning = _calc(info, _Tokens(t, t, 0, 0, t))
    return _Rates(
        inp=float(base / t),
        cache_read=float(_calc(info, _Tokens(0, 0, t, 0)) / t),
        cache_write=float(_calc(info, _Tokens(0, 0, 0, t)) / t),
        out=float((with_out - base) / t),
        reasoning=float((with_reasoning - base) / t),
    )


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_LOCAL = _Marker("local")
_UNPRICED = _Marker("unpriced")
_Resolved: TypeAlias = "PriceOverride | _ModelInfo | _Marker"
_MAX_RESOLVED = 4096


class Pricer:
    """Prices records. Thread-safe; the first call loads the price data (about half a second),
    so call `warm_up()` off the event loop (the history writer does, in its thread)."""

    def __init__(
        self,
        providers: Sequence[ProviderConfig] = (),
        overrides: Mapping[str, PriceOverride] | None = None,
    ) -> None:
        self._providers = {p.name: p for p in providers}
        self._overrides = dict(overrides or {})
        self._lock = threading.Lock()
        self._warned: set[tuple[str, str]] = set()
        self._models: dict[tuple[str | None, str | None, str, int], _ModelInfo | None] = {}
        self._how: dict[tuple[str, str, int], _Resolved] = {}

    @classmethod
    def from_config(cls, config: AppConfig) -> Pricer:
        return cls(config.providers, config.history.prices)

    def __reduce__(self) -> tuple[type[Pricer], tuple[list[ProviderConfig], dict[str, Any]]]:
        # Sent to the history writer's process: the providers without their keys (pricing
        # needs kinds and URLs), and none of the caches or locks.
        providers = [replace(p, api_keys=[]) for p in self._providers.values()]
        return (Pricer, (providers, dict(self._overrides)))

    @staticmethod
    def ready() -> bool:
        """Whether the price data is loaded (`apply` prices from then on)."""
        return _loaded.is_set()

    def warm_up(self) -> None:
        """Load the bundled price data (about half a second; blocking, so off the loop)."""
        try:
            _snapshot()
        except Exception:  # pragma: no cover - defensive: pricing must never break history
            log.exception("could not load the bundled price data")

    def warm_up_in_background(self) -> None:
        """Load the price data on a thread of its own, at most once per process."""
        if _loaded.is_set() or not _warming.acquire(blocking=False):
            return
        threading.Thread(target=self.warm_up, name="desktop-proxy-prices", daemon=True).start()

    def price_record(self, rec: RequestRecord | RecordValues) -> Price:
        """The record's cost. A record already priced (by `apply`, or with a cost reported by
        the upstream) keeps its price."""
        if rec.price_source is not None or rec.unpriced:
            return Price(rec.cost_usd, rec.unpriced, rec.price_source)
        if rec.cost_usd is not None:
            return Price(rec.cost_usd, False, SOURCE_RECORD)
        return self.price(
            provider=rec.provider,
            model=rec.model,
            input_tokens=rec.input_tokens,
            output_tokens=rec.output_tokens,
            cache_read_tokens=rec.cache_read_tokens,
            cache_write_tokens=rec.cache_write_tokens,
            reasoning_tokens=rec.reasoning_tokens,
            when=rec.time,
        )

    def apply(self, rec: RequestRecord) -> Price:
        """Price `rec` and write the result into it (cost_usd, unpriced, price_source).

        Cheap (about 0.1 ms), so the gateway may call it on the event loop just before
        `recorder.record(rec)` and live views show the cost at once. Until the price data has
        been loaded (`warm_up_in_background()`, started when a live view is listening) it does
        nothing and returns `Price.none()`: the writer prices the record later. Never raises.
        """
        if not _loaded.is_set():
            return Price.none()
        try:
            price = self.price_record(rec)
        except Exception:  # pragma: no cover - pricing must never break a request
            log.exception("pricing a request failed")
            return Price.none()
        rec.cost_usd, rec.unpriced, rec.price_source = price.cost_usd, price.unpriced, price.source
        return price

    def price(
        self,
        *,
        provider: str | None,
        model: str | None,
        input_tokens: int | None,
        output_tokens: int | None,
        cache_read_tokens: int | None = None,
        cache_write_tokens: int | None = None,
        reasoning_tokens: int | None = None,
        when: float | None = None,
    ) -> Price:
        """Price token counts (Anthropic semantics: input excludes cache) for a model that ran.

        `provider` is the configured provider's name (falling back to treating it as a kind when
        no such provider is configured); `when` is the request's Unix time, so that dated price
        changes apply as they did then.
        """
        if (
            input_tokens is None
            and output_tokens is None
            and cache_read_tokens is None
            and cache_write_tokens is None
        ):
            return _NO_PRICE
        if not model:
            return _UNKNOWN_PRICE
        provider = provider or ""
        hour = int((time.time() if when is None else when) // 3600)
        # How a (provider, model) is priced is looked up once an hour: this runs on the event
        # loop for every request, and the lookup is most of its cost.
        key = (provider, model, hour)
        how = self._how.get(key)
        if how is None:
            how = self._resolve(provider, _clean_model(model), hour)
            if len(self._how) >= _MAX_RESOLVED:
                self._how.clear()
            self._how[key] = how
        if how is _UNPRICED:
            return _UNKNOWN_PRICE
        if how is _LOCAL:
            return _LOCAL_PRICE
        inp = max(0, input_tokens or 0)
        out = max(0, output_tokens or 0)
        cr = max(0, cache_read_tokens or 0)
        cw = max(0, cache_write_tokens or 0)
        if isinstance(how, PriceOverride):
            return Price(override_cost(how, inp, out, cr, cw), False, SOURCE_OVERRIDE)
        assert isinstance(how, _ModelInfo)
        reasoning = min(out, max(0, reasoning_tokens or 0))
        return Price(self._cost(how, _Tokens(inp, out, cr, cw, reasoning)), False, library_source())

    def _resolve(self, provider: str, model: str, hour: int) -> _Resolved:
        override = self._override(provider, model)
        if override is not None:
            return override
        config = self._providers.get(provider)
        kind = config.kind if config is not None else provider
        if kind in LOCAL_KINDS:
            return _LOCAL
        target = self._library_target(config, kind)
        info = None
        if target is not None:
            with self._lock:
                info = self._model_info(target, model, hour)
        if info is None:
            self._warn_unpriced(provider, model)
            return _UNPRICED
        return info

    def _override(self, provider: str, model: str) -> PriceOverride | None:
        for key in (f"{provider}:{model}", model, f"{provider}:*"):
            found = self._overrides.get(key)
            if found is not None:
                return found
        return None

    def _cost(self, info: _ModelInfo, tokens: _Tokens) -> float:
        total_input = tokens.total_input
        if not info.linear or total_input == 0:
            with self._lock:
                return float(_calc(info, tokens))
        starts = info.tier_starts
        bracket = sum(total_input > start for start in starts) if starts else 0
        # Read without the lock: a bracket's rates are written once, then only read.
        rates = info.rates.get(bracket)
        if rates is None:
            with self._lock:
                rates = info.rates.get(bracket)
                if rates is None:
                    rates = info.rates[bracket] = _derive_rates(info, total_input)
        return rates.cost(tokens)

    @staticmethod
    def _library_target(
        config: ProviderConfig | None, kind: str
    ) -> tuple[str | None, str | None] | None:
        """(genai-prices provider id, provider API URL): how to find the provider; one is set."""
        preset = get_preset(kind)
        custom_url = (
            config is not None
            and kind != "azure"
            and (preset is None or preset.base_url is None or config.base_url != preset.base_url)
        )
        if custom_url and config is not None:
            # A generic kind, or a preset kind pointed elsewhere: price by where it really goes.
            return None, config.base_url
        if kind in PROVIDER_IDS:
            provider_id = PROVIDER_IDS[kind]
            return None if provider_id is None else (provider_id, None)
        if config is None and kind:
            return kind, None  # an unconfigured name: maybe a library id ("google", "x-ai")
        return None

    def _model_info(
        self, target: tuple[str | None, str | None], model: str, hour: int
    ) -> _ModelInfo | None:
        """The model's prices as they were in that hour; None when unknown. Cached."""
        key = (*target, model.lower(), hour)
        if key in self._models:
            return self._models[key]
        info: _ModelInfo | None = None
        try:
            snapshot = _snapshot()
            provider, found = snapshot.find_provider_model(model, None, target[0], target[1])
            moment = datetime.fromtimestamp(hour * 3600, UTC)
            info = _ModelInfo.build(provider, found, moment)
        except LookupError:
            info = None
        except Exception:
            log.warning("looking up the price of %s failed", model, exc_info=True)
            info = None
        if len(self._models) > 4096:
            self._models.clear()
        self._models[key] = info
        return info

    def _warn_unpriced(self, provider: str, model: str) -> None:
        key = (provider, model)
        if key in self._warned:
            return
        self._warned.add(key)
        log.warning(
            "no price known for model %r on provider %r: its requests are recorded as unpriced; "
            'add a price under history.prices in config.json (e.g. "%s:%s": '
            '{"input": 1.0, "output": 2.0} in USD per million tokens)',
            model,
            provider,
            provider,
            model,
        )
