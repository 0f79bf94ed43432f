"""A minimal, fast fake OpenAI upstream for the benchmark (not tests/fakes: it records nothing).

`POST /v1/chat/completions` (and `/chat/completions`) answers a small precomputed completion,
or, with `"stream": true`, a stream of `--chunks` content deltas, each sent `--delay-ms` after
the previous one (the role chunk goes out at once; `finish`, the usage chunk when asked for, and
`[DONE]` follow the last delta together, as real upstreams send them).

Run on its own: `python -m bench.upstream --port 0` prints `Listening on http://HOST:PORT`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time
from collections.abc import Sequence

from aiohttp import web

MODEL = "bench-model"
_CREATED = int(time.time())


def _chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
    obj = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": _CREATED,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
    },
    separators=(",", ":"),
).encode()

USAGE_CHUNK = (
    b"data: "
    + json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": _CREATED,
            "model": MODEL,
            "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": 50, "total_tokens": 62},
        },
        separators=(",", ":"),
    ).encode()
    + b"\n\n"
)


class FakeOpenAI:
    def __init__(self, chunks: int, delay_ms: float) -> None:
        self.delay = delay_ms / 1000.0
        self.role = _chunk({"role": "assistant", "content": ""})
        self.deltas = [_chunk({"content": f"t{i} "}) for i in range(chunks)]
        self.finish = _chunk({}, "stop")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return web.json_response({"error": {"message": "bad json"}}, status=400)
        if not body.get("stream"):
            return web.Response(body=COMPLETION, content_type="application/json")
        opts = body.get("stream_options")
        usage = isinstance(opts, dict) and opts.get("include_usage") is True
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        await response.write(self.role)
        for delta in self.deltas:
            await asyncio.sleep(self.delay)
            await response.write(delta)
        tail = self.finish + (USAGE_CHUNK if usage else b"") + b"data: [DONE]\n\n"
        await response.write(tail)
        await response.write_eof()
        return response

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/chat/completions", self.chat)
        return app


async def serve(host: str, port: int, chunks: int, delay_ms: float) -> None:
    runner = web.AppRunner(
        FakeOpenAI(chunks, delay_ms).app(), access_log=None, handle_signals=False
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    print(f"Listening on http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--chunks", type=int, default=50, help="content deltas per stream")
    parser.add_argument("--delay-ms", type=float, default=2.0, help="pause before each delta")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, args.chunks, args.delay_ms))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
