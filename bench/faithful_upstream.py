"""The tests' fake upstream (`tests/fakes/upstream.py`) as a process of its own, for the bench.

It is the reference the throughput budget names: it validates requests like the real APIs
(strict), records them and builds each answer in the real wire formats, so it costs several
times what `bench/upstream.py` (precomputed bytes) costs per request. Every chat request gets
the same short text answer. The recorded requests are dropped every second, so memory stays
flat however long the bench runs.

`python -m bench.faithful_upstream --port 0` prints `Listening on http://HOST:PORT`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Sequence

from tests.fakes.upstream import FakeUpstream, Reply

ANSWER = "Hello! How can I help you today?"
FORGET_EVERY_S = 1.0


async def forget_requests(fake: FakeUpstream) -> None:
    while True:
        await asyncio.sleep(FORGET_EVERY_S)
        fake.requests.clear()


async def serve(host: str, port: int) -> None:
    # No api_key and reject_unknown_models off (its default): the bench's `bench-model` is
    # accepted with the gateway's placeholder key.
    fake = FakeUpstream(strict=True, host=host, port=port)
    fake.default_reply = Reply.text(ANSWER)
    async with fake:
        print(f"Listening on {fake.base_url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        forgetter = asyncio.create_task(forget_requests(fake))
        try:
            await stop.wait()
        finally:
            forgetter.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.faithful_upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
