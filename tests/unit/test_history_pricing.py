"""Pricing: by the model that ran, cache-aware, from the bundled genai-prices data, offline."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from desktop_proxy.config.loader import parse_config
from desktop_proxy.config.models import PriceOverride, ProviderConfig
from desktop_proxy.history.pricing import PROVIDER_IDS, Pricer, override_cost
from tests.unit.history_helpers import CLAUDE, OLLAMA, OPENAI, make_record, pricer

NOW = 1_760_000_000.0  # 2025-10-09


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pricing must work offline: any attempt to open a connection fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("pricing tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_claude_sonnet_cache_example_by_hand() -> None:
    """1000 input + 2000 cache read + 500 cache write + 300 output on claude-sonnet-4-5.

    Anthropic's published prices per million tokens: input $3, cache read $0.30 (0.1×),
    cache write (5 min) $3.75 (1.25×), output $15:
        1000 × 3 + 2000 × 0.30 + 500 × 3.75 + 300 × 15 = 3000 + 600 + 1875 + 4500 = 9975
    → $0.009975. The same sum from the library's own listed prices must agree.
    """
    price = pricer().price(
        provider="claude",
        model="claude-sonnet-4-5",
        input_tokens=1000,
        cache_read_tokens=2000,
        cache_write_tokens=500,
        output_tokens=300,
    )
    assert not price.unpriced
    assert price.source is not None and price.source.startswith("genai-prices")
    assert price.cost_usd == pytest.approx(0.009975, abs=1e-12)

    from genai_prices.data_snapshot import get_snapshot

    _, model = get_snapshot().find_provider_model("claude-sonnet-4-5", None, "anthropic", None)
    listed = model.get_prices(datetime.now(tz=UTC))

    def base(value: Any) -> Decimal:
        return value if isinstance(value, Decimal) else value.base  # tiered: base tier

    by_library = (
        1000 * base(listed.input_mtok)
        + 2000 * base(listed.cache_read_mtok)
        + 500 * base(listed.cache_write_mtok)
        + 300 * base(listed.output_mtok)
    ) / 1_000_000
    assert (base(listed.input_mtok), base(listed.output_mtok)) == (Decimal(3), Decimal(15))
    assert (base(listed.cache_read_mtok), base(listed.cache_write_mtok)) == (
        Decimal("0.3"),
        Decimal("3.75"),
    )
    assert price.cost_usd == pytest.approx(float(by_library), abs=1e-12)


def test_input_tokens_exclude_cache_tokens() -> None:
    """Our input count excludes cached tokens: adding cache reads adds only their own price."""
    p = pricer()
    plain = p.price(
        provider="claude", model="claude-sonnet-4-5", input_tokens=1000, output_tokens=0
    )
    cached = p.price(
        provider="claude",
        model="claude-sonnet-4-5",
        input_tokens=1000,
        output_tokens=0,
        cache_read_tokens=10_000,
    )
    assert plain.cost_usd == pytest.approx(0.003)
    assert cached.cost_usd == pytest.approx(0.003 + 10_000 * 0.30 / 1e6)


def test_long_context_tier_counts_cached_tokens() -> None:
    """The >200k-token tier of Sonnet 4.5 looks at the whole prompt, cached tokens included:
    1000 uncached + 250,000 cache read is a long prompt ($6 input, $0.60 cache read)."""
    price = pricer().price(
        provider="claude",
        model="claude-sonnet-4-5",
        input_tokens=1000,
        output_tokens=0,
        cache_read_tokens=250_000,
    )
    assert price.cost_usd == pytest.approx((1000 * 6 + 250_000 * 0.6) / 1e6)


def test_priced_by_the_model_that_ran_not_the_requested_one() -> None:
    """A request for 'opus' routed to gpt-4o-mini costs gpt-4o-mini's price."""
    rec = make_record(
        requested_model="claude-opus-4-1",
        provider="openai",
        model="gpt-4o-mini",
        input_tokens=1_000_000,
        output_tokens=1_000_000,
    )
    price = pricer().price_record(rec)
    assert price.cost_usd == pytest.approx(0.15 + 0.60)


def test_unknown_model_is_unpriced_not_free() -> None:
    price = pricer().price(
        provider="openai", model="my-renamed-model-2099", input_tokens=10, output_tokens=10
    )
    assert price.unpriced
    assert price.cost_usd is None


def test_unknown_provider_is_unpriced() -> None:
    custom = ProviderConfig(
        name="lab", kind="openai-compatible", base_url="http://10.0.0.5:8000/v1",
        protocol="openai", auth="none",
    )  # fmt: skip
    price = Pricer([custom]).price(provider="lab", model="gpt-4o", input_tokens=1, output_tokens=1)
    assert price.unpriced and price.cost_usd is None


def test_local_ollama_costs_nothing() -> None:
    price = pricer().price(provider="ollama", model="llama3:8b", input_tokens=5000, output_tokens=9)
    assert price.cost_usd == 0.0
    assert not price.unpriced
    assert price.source == "local"


def test_override_from_config() -> None:
    """history.prices: provider:model beats model beats provider:*; cache defaults to input."""
    config = parse_config(
        {
            "providers": [
                {"name": "ollama", "kind": "ollama", "models": ["big"]},
                {"name": "lab", "kind": "openai-compatible", "baseUrl": "http://10.0.0.5/v1"},
            ],
            "history": {
                "prices": {
                    "ollama:big": {"input": 1, "output": 2, "cacheRead": 0.5},
                    "gpt-4o": {"input": 10, "output": 20},
                    "lab:*": {"input": 3, "output": 4},
                }
            },
        },
        "config.json",
    )
    p = Pricer.from_config(config)
    big = p.price(
        provider="ollama",
        model="big",
        input_tokens=1_000_000,
        output_tokens=1_000_000,
        cache_read_tokens=1_000_000,
        cache_write_tokens=1_000_000,
    )
    assert big.cost_usd == pytest.approx(1 + 2 + 0.5 + 1)  # cache write falls back to input
    assert big.source == "config"
    assert p.price(
        provider="lab", model="gpt-4o", input_tokens=1_000_000, output_tokens=0
    ).cost_usd == pytest.approx(10)
    assert p.price(
        provider="lab", model="anything", input_tokens=0, output_tokens=1_000_000
    ).cost_usd == pytest.approx(4)
    # Other ollama models stay free.
    assert p.price(provider="ollama", model="small", input_tokens=9, output_tokens=9).cost_usd == 0


def test_override_cost_arithmetic() -> None:
    price = PriceOverride(input=2, output=8, cache_read=0.2, cache_write=2.5)
    assert override_cost(price, 1000, 300, 2000, 500) == pytest.approx(
        (1000 * 2 + 300 * 8 + 2000 * 0.2 + 500 * 2.5) / 1e6
    )


def test_no_usage_is_not_priced_and_not_unpriced() -> None:
    """A request rejected before any upstream (401, 404) has no cost and is not 'unpriced'."""
    rec = make_record(
        status=401,
        error="bad key",
        provider=None,
        model=None,
        input_tokens=None,
        output_tokens=None,
        cache_read_tokens=None,
        cache_write_tokens=None,
    )
    price = pricer().price_record(rec)
    assert (price.cost_usd, price.unpriced) == (None, False)


def test_cost_already_on_the_record_wins() -> None:
    rec = make_record(cost_usd=0.5)
    assert pricer().price_record(rec).cost_usd == 0.5


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        (OPENAI, "gpt-4o"),
        (CLAUDE, "claude-haiku-4-5"),
        (
            ProviderConfig(
                "gem",
                "gemini",
                "https://generativelanguage.googleapis.com/v1beta/openai",
                "openai",
                "bearer",
            ),
            "gemini-2.5-flash",
        ),
        (
            ProviderConfig("or", "openrouter", "https://openrouter.ai/api/v1", "openai", "bearer"),
            "anthropic/claude-sonnet-4.5",
        ),
        (
            ProviderConfig("ds", "deepseek", "https://api.deepseek.com/v1", "openai", "bearer"),
            "deepseek-chat",
        ),
        (
            ProviderConfig("az", "azure", "https://r.openai.azure.com", "openai", "api-key"),
            "gpt-4o",
        ),
        (
            ProviderConfig("m", "mistral", "https://api.mistral.ai/v1", "openai", "bearer"),
            "mistral-large-latest",
        ),
    ],
)
def test_provider_kinds_map_to_library_providers(provider: ProviderConfig, model: str) -> None:
    price = Pricer([provider]).price(
        provider=provider.name, model=model, input_tokens=1000, output_tokens=1000
    )
    assert not price.unpriced
    assert price.cost_usd is not None and price.cost_usd > 0


def test_every_preset_kind_has_a_mapping() -> None:
    from desktop_proxy.config.presets import PRESETS

    assert set(PRESETS) <= set(PROVIDER_IDS)


def test_unpriced_model_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    p = pricer()
    for _ in range(3):
        p.price(provider="openai", model="mystery-1", input_tokens=1, output_tokens=1)
    messages = [r.getMessage() for r in caplog.records if "mystery-1" in r.getMessage()]
    assert len(messages) == 1
    assert "history.prices" in messages[0]


def test_library_never_updates_prices_by_itself() -> None:
    """We only ever read the bundled snapshot; no background updater is running."""
    from genai_prices import data_snapshot

    pricer().price(provider="claude", model="claude-sonnet-4-5", input_tokens=1, output_tokens=1)
    assert data_snapshot._custom_snapshot is None
    assert not data_snapshot.get_snapshot().from_auto_update
    assert OLLAMA.kind == "ollama"


def test_apply_writes_the_price_into_the_record() -> None:
    """The gateway may price on the loop (live views); the writer then keeps that price."""
    p = pricer()
    p.warm_up()
    assert p.ready()
    rec = make_record(provider="openai", model="no-such-model-yy")
    price = p.apply(rec)
    assert (rec.cost_usd, rec.unpriced, rec.price_source) == (None, True, None)
    assert price.unpriced
    rec = make_record(input_tokens=100_000, output_tokens=0)
    p.apply(rec)
    assert rec.cost_usd == pytest.approx(0.3) and rec.price_source is not None
    # Already priced: kept as is, even by a pricer with other prices.
    other = Pricer(overrides={"claude-sonnet-4-5": PriceOverride(input=100, output=100)})
    assert other.price_record(rec).cost_usd == pytest.approx(0.3)


def test_apply_never_loads_the_price_data_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before warm_up (done in the writer thread), apply() leaves the record for the writer."""
    import threading

    from desktop_proxy.history import pricing

    monkeypatch.setattr(pricing, "_loaded", threading.Event())
    rec = make_record()
    assert pricer().apply(rec).cost_usd is None
    assert (rec.cost_usd, rec.price_source) == (None, None)
    assert pricer().price_record(rec).cost_usd is not None  # the writer's path still prices


@pytest.mark.parametrize(
    ("kind", "model"),
    [
        ("anthropic", "claude-sonnet-4-5"),  # tiered above 200k input tokens
        ("anthropic", "claude-opus-4-1"),
        ("openai", "gpt-4o"),  # no cache write price: cache writes at the input price
        ("openai", "o3"),
        ("gemini", "gemini-2.5-pro"),  # tiered
        ("perplexity", "sonar-pro"),  # a per-request fee: not linear, priced by the library
        ("perplexity", "sonar-deep-research"),  # reasoning tokens at their own price
    ],
)
def test_cached_rates_match_the_library(kind: str, model: str) -> None:
    """The fast path (per-token rates per price bracket) gives the library's own figures."""
    import random

    from genai_prices import Usage, calc_price

    rng = random.Random(f"{kind}/{model}")
    p = Pricer()
    provider_id = PROVIDER_IDS.get(kind, kind)
    for _ in range(40):
        inp, out = rng.randrange(0, 300_000), rng.randrange(0, 40_000)
        cr, cw = rng.choice([0, rng.randrange(0, 250_000)]), rng.choice([0, rng.randrange(0, 9000)])
        rs = rng.choice([0, out // 2])
        mine = p.price(
            provider=kind,
            model=model,
            input_tokens=inp,
            output_tokens=out,
            cache_read_tokens=cr,
            cache_write_tokens=cw,
            reasoning_tokens=rs,
            when=NOW,
        )
        values = {
            "input_tokens": inp + cr + cw,
            "cache_read_tokens": cr,
            "cache_write_tokens": cw,
            "output_tokens": out,
        }
        if rs:
            values["output_reasoning_tokens"] = rs
        hour = datetime.fromtimestamp(int(NOW // 3600) * 3600, UTC)
        expected = calc_price(
            Usage(**values), model, provider_id=provider_id, genai_request_timestamp=hour
        )
        assert mine.cost_usd == pytest.approx(float(expected.total_price), rel=1e-9, abs=1e-12)


def test_pricing_is_fast_once_warm() -> None:
    import time as _time

    p = pricer()
    p.price(provider="claude", model="claude-sonnet-4-5", input_tokens=10, output_tokens=1)
    start = _time.perf_counter()
    for i in range(2000):
        p.price(
            provider="claude",
            model="claude-sonnet-4-5",
            input_tokens=1000 + i,
            output_tokens=300,
            cache_read_tokens=20_000,
            when=NOW,
        )
    per_call = (_time.perf_counter() - start) / 2000
    assert per_call < 50e-6, per_call  # ~a few µs; the library alone takes ~100 µs
