from __future__ import annotations

import json

import pytest

from desktop_proxy.protocols.sse import SSEDecoder, SSEEvent, encode_sse


def _decode_in_pieces(raw: bytes, step: int) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    for start in range(0, len(raw), step):
        events.extend(decoder.feed(raw[start : start + step]))
    events.extend(decoder.close())
    return events


def test_events_survive_any_split_including_inside_multibyte_characters() -> None:
    """A stream split at every possible byte boundary still yields the same events and text."""
    raw = 'event: a\ndata: {"t":"café ☕ 日本"}\n\nevent: b\ndata: 😀\n\n'.encode()
    expected = [SSEEvent("a", '{"t":"café ☕ 日本"}'), SSEEvent("b", "😀")]
    for step in range(1, len(raw) + 1):
        assert _decode_in_pieces(raw, step) == expected


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_events_are_split_on_blank_lines_of_any_line_ending(newline: str) -> None:
    """LF, CRLF and CR line endings all separate events."""
    raw = f"data: one{newline}{newline}data: two{newline}{newline}".encode()
    assert _decode_in_pieces(raw, 1) == [SSEEvent(None, "one"), SSEEvent(None, "two")]


def test_crlf_split_between_reads_does_not_end_an_event_early() -> None:
    """A CR at the end of one read and its LF at the start of the next count as one line end."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\r") == []
    assert decoder.feed(b"\ndata: y\r\n\r") == []
    assert decoder.feed(b"\n") == [SSEEvent(None, "x\ny")]


def test_data_without_space_and_multiline_data_are_joined() -> None:
    """`data:` with or without the space is read, and several data lines join with newlines."""
    raw = b"data:first\ndata: second\ndata:  third\n\n"
    assert _decode_in_pieces(raw, 3) == [SSEEvent(None, "first\nsecond\n third")]


def test_comment_lines_and_unknown_fields_are_ignored() -> None:
    """Keepalive comments and id/retry fields do not produce events or change data."""
    raw = b": keepalive\n\nid: 7\nretry: 100\n: note\ndata: x\n\n: OPENROUTER PROCESSING\n\n"
    assert _decode_in_pieces(raw, 5) == [SSEEvent(None, "x")]


def test_event_name_applies_only_to_its_own_event() -> None:
    """An `event:` line names only the event it belongs to."""
    raw = b"event: ping\ndata: {}\n\ndata: plain\n\n"
    assert _decode_in_pieces(raw, 4) == [SSEEvent("ping", "{}"), SSEEvent(None, "plain")]


def test_close_dispatches_an_event_without_a_trailing_blank_line() -> None:
    """An upstream that closes right after its last data line does not lose that event."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: [DONE]") == []
    assert decoder.close() == [SSEEvent(None, "[DONE]")]


def test_byte_order_mark_at_stream_start_is_dropped() -> None:
    """A UTF-8 BOM before the first field does not corrupt the field name."""
    assert _decode_in_pieces(b"\xef\xbb\xbfdata: x\n\n", 1) == [SSEEvent(None, "x")]


def test_invalid_utf8_is_replaced_rather_than_raising() -> None:
    """Broken bytes from an upstream become U+FFFD instead of killing the stream."""
    assert _decode_in_pieces(b"data: a\xffb\n\n", 2) == [SSEEvent(None, "a\ufffdb")]


def test_line_separator_characters_inside_data_do_not_split_lines() -> None:
    """U+2028 and U+2029, legal raw in JSON strings, stay inside the data line."""
    text = 'data: {"t":"a\u2028b\u2029c"}\n\n'
    assert _decode_in_pieces(text.encode(), 1) == [SSEEvent(None, '{"t":"a\u2028b\u2029c"}')]


def test_encode_sse_writes_compact_json_with_event_line_and_raw_unicode() -> None:
    """A dict is written as compact JSON, non-ASCII kept as is, after the event line."""
    raw = encode_sse({"type": "ping", "text": "é"}, "ping")
    assert raw == 'event: ping\ndata: {"type":"ping","text":"é"}\n\n'.encode()


def test_encode_sse_without_event_name_and_with_multiline_text() -> None:
    """A string is written as data lines, one per line of text, and no event line."""
    assert encode_sse("[DONE]") == b"data: [DONE]\n\n"
    assert encode_sse("a\nb") == b"data: a\ndata: b\n\n"


def test_encoded_events_decode_back_to_the_same_payload() -> None:
    """What encode_sse writes, SSEDecoder reads back unchanged."""
    payload = {"type": "content_block_delta", "delta": {"text": "line1\nline2 ☕"}}
    events = _decode_in_pieces(encode_sse(payload, "content_block_delta"), 2)
    assert len(events) == 1
    assert events[0].event == "content_block_delta"
    assert json.loads(events[0].data) == payload


def test_a_very_long_event_arriving_in_small_reads_is_decoded_whole() -> None:
    """A multi-megabyte data line split into 1 KB reads comes out as one event."""
    raw = b"data: " + b"x" * 2_000_000 + b"\n\n"
    events = _decode_in_pieces(raw, 1024)
    assert len(events) == 1 and len(events[0].data) == 2_000_000
