"""Golden transcripts for every translation path, plus real SDK clients reading our streams.

Each case under tests/golden/<path>/ holds an input and the exact expected output. After an
intended change, regenerate with `UPDATE_GOLDEN=1 pytest tests/unit/test_translation_golden.py`
and review the diff like code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import anthropic as anthropic_sdk
import httpx2
import openai as openai_sdk
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState

from desktop_proxy.protocols import anthropic, openai_chat
from desktop_proxy.protocols.internal import (
    Part,
    ReasoningDelta,
    ReasoningPart,
    Response,
    StreamError,
    StreamEvent,
    StreamFinish,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallPart,
    ToolCallStart,
    Usage,
    UsageUpdate,
)
from desktop_proxy.protocols.quirks import traits_for
from desktop_proxy.protocols.sse import SSEDecoder

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def _cases(directory: str) -> list[Path]:
    return sorted((GOLDEN / directory).glob("*.json"))


def _ids(paths: Iterable[Path]) -> list[str]:
    return [p.stem for p in paths]


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _check_json(path: Path, case: dict[str, Any], actual: dict[str, Any]) -> None:
    if UPDATE:
        case["expected"] = actual
        path.write_text(json.dumps(case, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return
    assert actual == case["expected"]


def _check_text(path: Path, actual: str) -> None:
    if UPDATE:
        path.write_text(actual, encoding="utf-8")
        return
    assert actual == path.read_text(encoding="utf-8")


# --- requests and responses -----------------------------------------------------------------

A_TO_C_REQUESTS = _cases("requests_anthropic_to_openai")
C_TO_A_REQUESTS = _cases("requests_openai_to_anthropic")
C_TO_A_RESPONSES = _cases("responses_openai_to_anthropic")
A_TO_C_RESPONSES = _cases("responses_anthropic_to_openai")


@pytest.mark.parametrize("path", A_TO_C_REQUESTS, ids=_ids(A_TO_C_REQUESTS))
def test_anthropic_request_becomes_expected_openai_request(path: Path) -> None:
    """A Claude Code (Anthropic) request is translated for each upstream exactly as stored."""
    case = _load(path)
    upstream = case["upstream"]
    traits = traits_for(upstream["kind"], upstream["model"])
    request = anthropic.decode_request(case["input"])
    actual = openai_chat.encode_request(request, upstream["model"], traits=traits)
    _check_json(path, case, actual)


@pytest.mark.parametrize("path", C_TO_A_REQUESTS, ids=_ids(C_TO_A_REQUESTS))
def test_openai_request_becomes_expected_anthropic_request(path: Path) -> None:
    """An OpenAI Chat request is translated for an Anthropic upstream exactly as stored."""
    case = _load(path)
    model = case["upstream"]["model"]
    request = openai_chat.decode_request(case["input"])
    actual = anthropic.encode_request(request, model, traits=traits_for("anthropic", model))
    _check_json(path, case, actual)


@pytest.mark.parametrize("path", C_TO_A_RESPONSES, ids=_ids(C_TO_A_RESPONSES))
def test_openai_response_becomes_expected_anthropic_response(path: Path) -> None:
    """An upstream chat.completion reaches an Anthropic client exactly as stored."""
    case = _load(path)
    response = openai_chat.decode_response(case["input"])
    actual = anthropic.encode_response(response, case["client_model"])
    _check_json(path, case, actual)


@pytest.mark.parametrize("path", A_TO_C_RESPONSES, ids=_ids(A_TO_C_RESPONSES))
def test_anthropic_response_becomes_expected_openai_response(path: Path) -> None:
    """An upstream Anthropic message reaches an OpenAI client exactly as stored."""
    case = _load(path)
    response = anthropic.decode_response(case["input"])
    actual = openai_chat.encode_response(response, case["client_model"], created=case["created"])
    _check_json(path, case, actual)


# --- streams ----------------------------------------------------------------------------------

C_TO_A_STREAMS = _cases("streams_openai_to_anthropic")
A_TO_C_STREAMS = _cases("streams_anthropic_to_openai")


def _pipe(
    raw: bytes,
    decode: Callable[[Any], list[StreamEvent]],
    close_decoder: Callable[[], list[StreamEvent]],
    encode: Callable[[StreamEvent], bytes],
    close_encoder: Callable[[], bytes],
    step: int,
    seen: list[StreamEvent] | None = None,
) -> bytes:
    sse = SSEDecoder()
    out = bytearray()

    def push(events: list[StreamEvent]) -> None:
        for event in events:
            if seen is not None:
                seen.append(event)
            out.extend(encode(event))

    for start in range(0, len(raw), step):
        for sse_event in sse.feed(raw[start : start + step]):
            push(decode(sse_event))
    for sse_event in sse.close():
        push(decode(sse_event))
    push(close_decoder())
    out.extend(close_encoder())
    return bytes(out)


def _openai_to_anthropic(
    raw: bytes, params: dict[str, Any], step: int, seen: list[StreamEvent] | None = None
) -> bytes:
    decoder = openai_chat.StreamDecoder()
    encoder = anthropic.StreamEncoder(
        params["client_model"], params["input_tokens_estimate"], params["message_id"]
    )
    return _pipe(raw, decoder.feed, decoder.close, encoder.feed, encoder.close, step, seen)


def _anthropic_to_openai(
    raw: bytes, params: dict[str, Any], step: int, seen: list[StreamEvent] | None = None
) -> bytes:
    decoder = anthropic.StreamDecoder()
    encoder = openai_chat.StreamEncoder(
        params["client_model"],
        params["include_usage"],
        params["completion_id"],
        created=params["created"],
    )
    return _pipe(raw, decoder.feed, decoder.close, encoder.feed, encoder.close, step, seen)


def _expected_path(path: Path) -> Path:
    return path.with_name(path.stem + ".expected.sse")


def _input_bytes(path: Path) -> bytes:
    return path.with_name(path.stem + ".input.sse").read_bytes()


@pytest.mark.parametrize("path", C_TO_A_STREAMS, ids=_ids(C_TO_A_STREAMS))
def test_openai_stream_becomes_expected_anthropic_stream(path: Path) -> None:
    """An upstream chat stream reaches Claude Code as the stored event sequence, however the
    network splits the bytes."""
    params = _load(path)
    raw = _input_bytes(path)
    whole = _openai_to_anthropic(raw, params, step=len(raw))
    _check_text(_expected_path(path), whole.decode())
    for step in (1, 7, 64):
        assert _openai_to_anthropic(raw, params, step=step) == whole


@pytest.mark.parametrize("path", A_TO_C_STREAMS, ids=_ids(A_TO_C_STREAMS))
def test_anthropic_stream_becomes_expected_openai_stream(path: Path) -> None:
    """An upstream Anthropic stream reaches an OpenAI client as the stored chunks, however the
    network splits the bytes."""
    params = _load(path)
    raw = _input_bytes(path)
    whole = _anthropic_to_openai(raw, params, step=len(raw))
    _check_text(_expected_path(path), whole.decode())
    for step in (1, 5, 64):
        assert _anthropic_to_openai(raw, params, step=step) == whole


# --- real clients reading the translated streams -----------------------------------------------


def _sse_reply(body: bytes) -> Callable[[httpx2.Request], httpx2.Response]:
    def reply(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    return reply


def _anthropic_client(
    handler: Callable[[httpx2.Request], httpx2.Response],
) -> anthropic_sdk.Anthropic:
    transport = httpx2.MockTransport(handler)
    return anthropic_sdk.Anthropic(
        api_key="test",
        base_url="http://gateway.test",
        max_retries=0,
        http_client=httpx2.Client(transport=transport),
    )


def _openai_client(handler: Callable[[httpx2.Request], httpx2.Response]) -> openai_sdk.OpenAI:
    transport = httpx2.MockTransport(handler)
    return openai_sdk.OpenAI(
        api_key="test",
        base_url="http://gateway.test/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=transport),
    )


def _accumulate(events: list[StreamEvent]) -> Response:
    """The response the internal events describe, as the non-streaming path would build it."""
    parts: list[Part] = []
    tools: dict[int, ToolCallPart] = {}
    stop: Any = "end_turn"
    usage = Usage()
    for event in events:
        last = parts[-1] if parts else None
        if isinstance(event, TextDelta):
            if isinstance(last, TextPart):
                last.text += event.text
            else:
                parts.append(TextPart(event.text))
        elif isinstance(event, ReasoningDelta) and event.text:
            if isinstance(last, ReasoningPart):
                last.text += event.text
            else:
                parts.append(ReasoningPart(event.text))
        elif isinstance(event, ToolCallStart):
            tools[event.index] = ToolCallPart(event.id, event.name, "", extra=event.extra)
            parts.append(tools[event.index])
        elif isinstance(event, ToolCallDelta):
            tools[event.index].arguments += event.arguments
        elif isinstance(event, UsageUpdate):
            usage = event.usage
        elif isinstance(event, StreamFinish):
            stop = event.stop_reason
            usage = event.usage or usage
    return Response(id="r", model="m", parts=parts, stop_reason=stop, usage=usage)


def _block_summary(block: dict[str, Any]) -> dict[str, Any]:
    keys = ("type", "text", "thinking", "id", "name", "input")
    return {k: block[k] for k in keys if k in block}


@pytest.mark.parametrize("path", C_TO_A_STREAMS, ids=_ids(C_TO_A_STREAMS))
def test_anthropic_sdk_reads_translated_stream_like_the_non_streaming_answer(path: Path) -> None:
    """The official Anthropic SDK accumulates our stream into the same message the
    non-streaming translation would have returned (or raises the upstream error)."""
    params = _load(path)
    events: list[StreamEvent] = []
    body = _openai_to_anthropic(_input_bytes(path), params, step=13, seen=events)
    client = _anthropic_client(_sse_reply(body))
    stream_kwargs: dict[str, Any] = {
        "model": "m",
        "max_tokens": 1,
        "messages": [{"role": "user", "content": "x"}],
    }
    errors = [e for e in events if isinstance(e, StreamError)]
    if errors:
        with (
            pytest.raises(anthropic_sdk.APIStatusError) as raised,
            client.messages.stream(**stream_kwargs) as stream,
        ):
            stream.get_final_message()
        assert errors[0].message in str(raised.value)
        return
    with client.messages.stream(**stream_kwargs) as stream:
        final = stream.get_final_message().model_dump()
    expected = anthropic.encode_response(_accumulate(events), params["client_model"])
    assert [_block_summary(b) for b in final["content"]] == [
        _block_summary(b) for b in expected["content"]
    ]
    assert final["stop_reason"] == expected["stop_reason"]
    assert final["model"] == params["client_model"]
    assert final["usage"]["input_tokens"] > 0


@pytest.mark.parametrize("path", A_TO_C_STREAMS, ids=_ids(A_TO_C_STREAMS))
def test_openai_sdk_reads_translated_stream_like_the_non_streaming_answer(path: Path) -> None:
    """The official OpenAI SDK (ChatCompletionStreamState) accumulates our stream into the same
    completion the non-streaming translation would have returned (or raises the error)."""
    params = _load(path)
    events: list[StreamEvent] = []
    body = _anthropic_to_openai(_input_bytes(path), params, step=11, seen=events)
    client = _openai_client(_sse_reply(body))
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], stream=True
    )
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    errors = [e for e in events if isinstance(e, StreamError)]
    if errors:
        with pytest.raises(openai_sdk.APIError) as raised:
            for chunk in stream:
                state.handle_chunk(chunk)
        assert errors[0].message in str(raised.value)
        return
    for chunk in stream:
        state.handle_chunk(chunk)
    final = state.get_final_completion()
    expected = openai_chat.encode_response(_accumulate(events), params["client_model"], created=0)
    message = final.choices[0].message
    want = expected["choices"][0]
    # The first chunk carries content "" (as OpenAI's does), so a tool-only answer reads "".
    assert (message.content or None) == want["message"]["content"]
    calls = [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []]
    want_calls = [
        (c["id"], c["function"]["name"], c["function"]["arguments"])
        for c in want["message"].get("tool_calls", [])
    ]
    assert calls == want_calls
    assert final.choices[0].finish_reason == want["finish_reason"]
    if params["include_usage"]:
        assert final.usage is not None
        assert (
            final.usage.model_dump(exclude_none=True)["prompt_tokens"]
            == (expected["usage"]["prompt_tokens"])
        )
    else:
        assert final.usage is None
