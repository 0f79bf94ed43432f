"""The real Claude Code CLI, driven through the gateway to a fake OpenAI Chat upstream.

Claude Code speaks the Anthropic Messages API (streamed); the gateway translates it to OpenAI
Chat Completions and the stream back. Runs fully offline: the only network use is the npm
install of the pinned CLI in the session fixture (see tests/e2e/clients.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from desktop_proxy.config.loader import parse_config
from desktop_proxy.config.secrets import SecretResolver
from desktop_proxy.history.record import RequestRecord
from desktop_proxy.paths import AppPaths
from desktop_proxy.server.runner import GatewayServer
from desktop_proxy.services import GatewayOptions, Services
from tests.e2e.clients import ClaudeCli, base_env, claude_test_env
from tests.fakes.upstream import FakeUpstream, RecordedRequest, Reply

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

UPSTREAM_KEY = "sk-upstream-e2e-0001"
CLAUDE_TIMEOUT = 240.0
CHAT_PATH = "/v1/chat/completions"
# gpt-4o's output limit in the gateway's table; Claude Code asks for 32000-64000.
GPT_4O_OUTPUT_LIMIT = 16384


def gateway_config(fake: FakeUpstream, **extra: Any) -> dict[str, Any]:
    """One OpenAI provider (the fake) and every Claude tier routed to it."""
    return {
        "providers": [
            {
                "name": "fake",
                "kind": "openai",
                "baseUrl": fake.openai_base,
                "apiKey": UPSTREAM_KEY,
                "models": ["gpt-4o", "gpt-4o-mini"],
            }
        ],
        "tiers": {"big": "gpt-4o", "middle": "gpt-4o", "small": "gpt-4o-mini"},
        **extra,
    }


@dataclass
class RunningGateway:
    server: GatewayServer
    records: list[RequestRecord]

    @property
    def url(self) -> str:
        return self.server.url


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(api_key=UPSTREAM_KEY, models=["gpt-4o", "gpt-4o-mini"]) as upstream:
        yield upstream


@pytest_asyncio.fixture
async def gateway(tmp_path: Path, fake: FakeUpstream) -> AsyncIterator[RunningGateway]:
    services = Services(AppPaths.for_root(tmp_path / "gw"), secrets=SecretResolver(environ={}))
    services.config = parse_config(gateway_config(fake), "e2e-config.json")
    records: list[RequestRecord] = []
    services.record_listeners.append(records.append)
    server = await services.start_gateway(GatewayOptions(port=0, shutdown_timeout=1.0))
    try:
        yield RunningGateway(server, records)
    finally:
        await services.stop_gateway()


@dataclass
class ClaudeRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def result(self) -> dict[str, Any]:
        """The `--output-format json` result object (the last JSON line of stdout)."""
        for line in reversed(self.stdout.strip().splitlines()):
            if line.startswith("{"):
                data = json.loads(line)
                assert isinstance(data, dict)
                return data
        raise AssertionError(f"no JSON result in stdout: {self.stdout!r}\nstderr: {self.stderr}")

    def explain(self) -> str:
        return (
            f"exit {self.returncode}\nstdout: {self.stdout[-3000:]}\nstderr: {self.stderr[-3000:]}"
        )


async def run_process(
    argv: list[str], env: dict[str, str], cwd: Path, limit: float = CLAUDE_TIMEOUT
) -> ClaudeRun:
    """Run a child without blocking the loop that serves the gateway and the fake."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        pytest.fail(f"{argv[0]} did not finish in {limit} s\n{out.decode()}\n{err.decode()}")
    assert proc.returncode is not None
    return ClaudeRun(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


async def run_claude_p(
    cli: ClaudeCli, gateway_url: str, prompt: str, home: Path, cwd: Path, *extra_args: str
) -> ClaudeRun:
    env = claude_test_env(
        home,
        {"ANTHROPIC_BASE_URL": gateway_url, "ANTHROPIC_AUTH_TOKEN": "desktop-proxy"},
    )
    argv = [str(cli.path), "-p", prompt, "--output-format", "json", *extra_args]
    return await run_process(argv, env, cwd)


# --- reading what reached the upstream ----------------------------------------------------------


def text_of(content: Any) -> str:
    """The text of an OpenAI message content (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def mentions(request: RecordedRequest, marker: str) -> bool:
    return any(
        marker in text_of(m.get("content"))
        for m in request.body.get("messages", [])
        if m.get("role") == "user"
    )


def has_tool_result(request: RecordedRequest) -> bool:
    return any(m.get("role") == "tool" for m in request.body.get("messages", []))


def chat_requests_with(fake: FakeUpstream, marker: str) -> list[RecordedRequest]:
    return [r for r in fake.requests_to(CHAT_PATH) if mentions(r, marker)]


def anthropic_bodies(records: list[RequestRecord]) -> list[dict[str, Any]]:
    """The Messages API bodies Claude Code sent, when the gateway kept them in its records."""
    bodies = []
    for rec in records:
        if rec.client_api == "anthropic" and rec.request_body:
            with_body = json.loads(rec.request_body)
            if isinstance(with_body, dict):
                bodies.append(with_body)
    return bodies


def assert_mid_conversation_system_carried(
    upstream: RecordedRequest, records: list[RequestRecord]
) -> None:
    messages = upstream.body["messages"]
    roles = [m["role"] for m in messages]
    assert roles[0] in ("system", "developer"), roles
    first_user = roles.index("user")
    later_system = [
        text_of(m["content"]) for m in messages[first_user:] if m["role"] in ("system", "developer")
    ]
    assert later_system, f"no system message after the first user message: {roles}"
    # Claude Code's own role:"system" message, word for word, when the gateway recorded it.
    for body in anthropic_bodies(records):
        for message in body.get("messages", []):
            if message.get("role") == "system":
                sent = text_of(message["content"])
                assert any(sent.strip() in carried for carried in later_system)


# --- the tests -------------------------------------------------------------------------------


async def test_plain_prompt_answer(
    claude_cli: ClaudeCli, gateway: RunningGateway, fake: FakeUpstream, tmp_path: Path
) -> None:
    """`claude -p` gets the fake's streamed text as its result, and the upstream receives an
    OpenAI request with the mid-conversation system message, tools as functions and a clamped
    max_tokens."""
    marker = "e2e-plain-7f3a"
    answer = "Hello from the fake upstream, translated by desktop-proxy."

    def choose(request: RecordedRequest) -> Reply:
        if mentions(request, marker):
            return Reply.text(answer, chunks=6)
        return Reply.text("ok")  # titles, summaries or other side requests

    fake.default_reply = choose
    work = tmp_path / "work"
    work.mkdir()
    run = await run_claude_p(
        claude_cli, gateway.url, f"Say hello ({marker})", tmp_path / "home", work
    )
    assert run.returncode == 0, run.explain()
    result = run.result
    assert result["is_error"] is False, run.explain()
    assert result["result"] == answer

    requests = chat_requests_with(fake, marker)
    assert requests, [r.path for r in fake.requests]
    upstream = requests[0]
    body = upstream.body
    assert upstream.header("authorization") == f"Bearer {UPSTREAM_KEY}"
    assert body["model"] == "gpt-4o"  # Claude Code's default (opus) model via tiers.big
    assert body["stream"] is True
    assert_mid_conversation_system_carried(upstream, gateway.records)
    tools = body["tools"]
    assert tools and all(t["type"] == "function" for t in tools)
    names = {t["function"]["name"] for t in tools}
    assert {"Bash", "Read", "Write", "Edit"} <= names
    assert all(isinstance(t["function"].get("parameters"), dict) for t in tools)
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    assert limit == GPT_4O_OUTPUT_LIMIT
    for anthropic_only in ("thinking", "context_management", "output_config", "metadata"):
        assert anthropic_only not in body
    assert "cache_control" not in upstream.raw.decode()


async def test_tool_loop_writes_a_file(
    claude_cli: ClaudeCli, gateway: RunningGateway, fake: FakeUpstream, tmp_path: Path
) -> None:
    """When the upstream calls Write, Claude Code really writes the file, then sends the tool
    result back as a role:"tool" message and prints the upstream's final text."""
    marker = "e2e-tool-91c2"
    work = tmp_path / "work"
    work.mkdir()
    target = work / "hello.txt"
    content = "hello from the gateway"
    final = "I wrote hello.txt for you."

    def choose(request: RecordedRequest) -> Reply:
        if not mentions(request, marker):
            return Reply.text("ok")
        if has_tool_result(request):
            return Reply.text(final)
        return Reply.tool_call(
            "Write", {"file_path": str(target), "content": content}, text="Writing it now."
        )

    fake.default_reply = choose
    run = await run_claude_p(
        claude_cli,
        gateway.url,
        f"Create hello.txt ({marker})",
        tmp_path / "home",
        work,
        "--permission-mode",
        "acceptEdits",
    )
    assert run.returncode == 0, run.explain()
    result = run.result
    assert result["is_error"] is False, run.explain()
    assert target.read_text(encoding="utf-8") == content
    assert result["result"].endswith(final)

    requests = chat_requests_with(fake, marker)
    assert len(requests) >= 2, [r.body.get("messages", [])[-1:] for r in requests]
    second = requests[1].body["messages"]
    calls = [m for m in second if m["role"] == "assistant" and m.get("tool_calls")]
    assert len(calls) == 1
    (call,) = calls[0]["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "Write"
    assert json.loads(call["function"]["arguments"]) == {
        "file_path": str(target),
        "content": content,
    }
    position = second.index(calls[0])
    tool_message = second[position + 1]
    assert tool_message["role"] == "tool"
    assert tool_message["tool_call_id"] == call["id"]
    assert str(target) in text_of(tool_message["content"])


async def test_tool_loop_through_a_gemini_style_upstream_keeps_thought_signatures(
    claude_cli: ClaudeCli, gateway: RunningGateway, fake: FakeUpstream, tmp_path: Path
) -> None:
    """Gemini 3 answers 400 when a tool call comes back without its thought signature. Claude
    Code must carry the call (with the signature hidden in its id) into the next request, where
    the gateway restores Gemini's id and signature."""
    marker = "e2e-gemini-5d1e"
    work = tmp_path / "work"
    work.mkdir()
    target = work / "signed.txt"
    content = "signed and delivered"
    final = "Done: signed.txt is written."
    signature = "CvcBAdHtim9+Ab/Ls2e1=="

    def choose(request: RecordedRequest) -> Reply:
        if not mentions(request, marker):
            return Reply.text("ok")
        if not has_tool_result(request):
            return Reply.gemini_tool_call(
                "function-call-1",
                "Write",
                {"file_path": str(target), "content": content},
                signature,
            )
        calls = [
            call
            for m in request.body["messages"]
            if m.get("role") == "assistant"
            for call in m.get("tool_calls") or []
        ]
        if any(
            call.get("extra_content", {}).get("google", {}).get("thought_signature") != signature
            or call.get("id") != "function-call-1"
            for call in calls
        ):
            return Reply.error(
                400, "Function call is missing a thought_signature in functionCall parts."
            )
        return Reply.text(final)

    fake.default_reply = choose
    run = await run_claude_p(
        claude_cli,
        gateway.url,
        f"Create signed.txt ({marker})",
        tmp_path / "home",
        work,
        "--permission-mode",
        "acceptEdits",
    )
    assert run.returncode == 0, run.explain()
    assert run.result["is_error"] is False, run.explain()
    assert target.read_text(encoding="utf-8") == content
    assert run.result["result"].endswith(final)
    second = [r for r in chat_requests_with(fake, marker) if has_tool_result(r)]
    assert second, "Claude Code never sent the tool result back"
    tool_message = next(m for m in second[0].body["messages"] if m["role"] == "tool")
    assert tool_message["tool_call_id"] == "function-call-1"


async def test_context_command_is_counted_without_upstream_calls(
    claude_cli: ClaudeCli, gateway: RunningGateway, fake: FakeUpstream, tmp_path: Path
) -> None:
    """`/context` gets its token counts from the gateway's count_tokens route: it shows the usage
    table and no generation request (Claude Code's fallback) reaches the upstream."""
    fake.default_reply = Reply.text("ok")
    work = tmp_path / "work"
    work.mkdir()
    run = await run_claude_p(claude_cli, gateway.url, "/context", tmp_path / "home", work)
    assert run.returncode == 0, run.explain()
    result = run.result
    assert result["is_error"] is False, run.explain()
    assert "Context Usage" in result["result"] and "System tools" in result["result"]
    assert fake.requests_to(CHAT_PATH) == []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_launch_command_runs_claude_through_an_embedded_gateway(
    claude_cli: ClaudeCli, fake: FakeUpstream, tmp_path: Path
) -> None:
    """`desktop-proxy launch claude -- -p ...` starts an embedded gateway with an access key and
    runs the real CLI through it, despite a dead HTTP proxy, an inherited ANTHROPIC_API_KEY and
    a settings file pointing Claude Code elsewhere (which stays untouched)."""
    marker = "e2e-launch-5d0e"
    answer = "Launched through desktop-proxy."
    fake.default_reply = lambda r: Reply.text(answer if mentions(r, marker) else "ok")
    access_key = "dp-e2e-launch-key-0123456789"
    dp_home = tmp_path / "dp"
    (dp_home / "config").mkdir(parents=True)
    config = gateway_config(
        fake,
        server={"port": _free_port()},  # nothing listens there: the launcher embeds a gateway
        accessKeys=[{"name": "e2e", "key": access_key}],
    )
    (dp_home / "config" / "config.json").write_text(json.dumps(config))
    home = tmp_path / "home"
    settings = home / ".claude" / "settings.json"
    settings.parent.mkdir(parents=True)
    original = json.dumps({"env": {"ANTHROPIC_BASE_URL": "http://127.0.0.1:9"}})
    settings.write_text(original)
    env = claude_test_env(
        home,
        {
            "PATH": f"{claude_cli.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "DESKTOP_PROXY_HOME": str(dp_home),
            "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
            "ANTHROPIC_API_KEY": "sk-ant-would-be-refused",
            "HTTP_PROXY": "http://127.0.0.1:9",
            "HTTPS_PROXY": "http://127.0.0.1:9",
        },
    )
    work = tmp_path / "work"
    work.mkdir()
    argv = [sys.executable, "-m", "desktop_proxy", "launch", "claude", "--"]
    argv += ["-p", f"Say something ({marker})", "--output-format", "json"]
    run = await run_process(argv, env, work)
    assert run.returncode == 0, run.explain()
    result = run.result
    assert result["is_error"] is False, run.explain()
    assert result["result"] == answer
    assert settings.read_text() == original
    assert "overrides them with --settings" in run.stderr
    assert chat_requests_with(fake, marker)


def test_environment_for_claude_is_minimal(tmp_path: Path) -> None:
    """The e2e child environment carries no ANTHROPIC_* or proxy variable from the developer."""
    env = base_env(tmp_path / "home")
    assert not [k for k in env if k.upper().startswith(("ANTHROPIC", "HTTP_PROXY", "HTTPS"))]
    assert env["HOME"] == str(tmp_path / "home")
