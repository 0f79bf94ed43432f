"""How the gateway reaches upstreams: TLS, HTTP(S)_PROXY, pooled connections.

Real providers are HTTPS and some users sit behind a corporate proxy; the fake upstream serves
TLS with a throwaway CA (trustme) and also stands in for the proxy, which receives the
absolute-form requests a proxy gets.
"""

from __future__ import annotations

import ssl
from typing import Any

import pytest
import trustme

from desktop_proxy.config.models import Timeouts
from desktop_proxy.server.upstream import UpstreamClient
from tests.fakes.upstream import FakeUpstream, Reply, Usage
from tests.server.conftest import UPSTREAM_KEY, GatewayFactory, openai_provider


@pytest.fixture(autouse=True)
def no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


async def test_https_upstream_verified_against_the_trusted_cas(
    make_gateway: GatewayFactory,
    openai_client: Any,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Streams and plain answers over TLS; the certificate is checked, not ignored."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    fake = await FakeUpstream(api_key=UPSTREAM_KEY, ssl_context=server_ctx).start()
    try:
        assert fake.openai_base.startswith("https://")
        # SSL_CERT_FILE is how users trust a corporate CA too (docs: "Upstreams").
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
        fake.script(
            Reply.text("secure", usage=Usage(input_tokens=3, output_tokens=1)),
            Reply.text(["se", "cure"]),
        )
        gw = await make_gateway({"providers": [openai_provider(fake.openai_base)]})
        client = openai_client(gw)
        reply = await client.chat.completions.create(
            model="up:gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content == "secure"
        stream = await client.chat.completions.create(
            model="up:gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == "secure"
    finally:
        await fake.stop()

    # The same upstream with a CA nobody trusts: a clear 502 that says why.
    monkeypatch.delenv("SSL_CERT_FILE")
    other_ca = trustme.CA()
    untrusted_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    other_ca.issue_cert("127.0.0.1").configure_cert(untrusted_ctx)
    untrusted = await FakeUpstream(ssl_context=untrusted_ctx).start()
    try:
        gw2 = await make_gateway({"providers": [openai_provider(untrusted.openai_base)]})
        with pytest.raises(Exception) as caught:
            await openai_client(gw2).chat.completions.create(
                model="up:gpt-4o", messages=[{"role": "user", "content": "hi"}]
            )
        assert getattr(caught.value, "status_code", None) == 502
        assert "certificate verify failed" in str(caught.value)
        assert untrusted.requests == []
    finally:
        await untrusted.stop()


async def test_upstreams_behind_an_http_proxy_go_through_it(
    make_fake_upstream: Any,
    make_gateway: GatewayFactory,
    openai_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HTTP_PROXY is honoured for remote upstreams (never for loopback ones)."""
    proxy = await make_fake_upstream()  # receives `POST http://api.example.test/...`
    proxy.script(Reply.text("via proxy"), Reply.text(["via ", "proxy"]))
    monkeypatch.setenv("HTTP_PROXY", proxy.base_url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # for the SDK's way to the gateway
    gw = await make_gateway({"providers": [openai_provider("http://api.example.test/v1")]})
    client = openai_client(gw)
    reply = await client.chat.completions.create(
        model="up:gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content == "via proxy"
    stream = await client.chat.completions.create(
        model="up:gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == (
        "via proxy"
    )
    assert [r.path for r in proxy.requests] == ["/v1/chat/completions"] * 2
    assert proxy.requests[0].header("host") == "api.example.test"
    assert proxy.requests[0].header("authorization") == f"Bearer {UPSTREAM_KEY}"


async def test_which_upstreams_use_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "internal.corp")
    client = UpstreamClient(Timeouts())
    try:
        assert client.uses_proxy("https://api.openai.com/v1/chat/completions")
        assert not client.uses_proxy("https://llm.internal.corp/v1/chat/completions")
        assert not client.uses_proxy("http://api.openai.com/v1/x")  # no HTTP_PROXY set
        assert not client.uses_proxy("https://localhost:11434/v1/chat/completions")
        assert not client.uses_proxy("https://127.0.0.1:1234/v1/chat/completions")
    finally:
        await client.close()


async def test_requests_reuse_pooled_upstream_connections(
    make_fake_upstream: Any, make_gateway: GatewayFactory, openai_client: Any
) -> None:
    """Twenty requests in a row do not open twenty connections to the upstream."""
    fake = await make_fake_upstream()
    fake.default_reply = Reply.text("ok")
    gw = await make_gateway({"providers": [openai_provider(fake.openai_base)]})
    client = openai_client(gw)
    for _ in range(20):
        await client.chat.completions.create(
            model="up:gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    assert len(fake.requests) == 20
    assert len({r.peer for r in fake.requests}) == 1
