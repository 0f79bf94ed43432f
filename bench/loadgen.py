"""Load generators, each run as its own process: wrk (preferred), hey (peer-comparable figure),
and a Python aiohttp fallback (`python -m bench.loadgen`) used when wrk is not installed.

All of them keep connections alive, send the same POST body, and report the same figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.procs import REPO_ROOT

WRK_INSTALL_HINT = (
    "wrk is not installed, so the Python aiohttp load generator is used instead. It is slower "
    "than wrk and can itself become the bottleneck, so the throughput figures are then lower "
    "bounds. For the real figures install wrk: `sudo apt-get install -y wrk` (Debian/Ubuntu), "
    "`brew install wrk` (macOS)."
)
HEY_INSTALL_HINT = (
    "hey is not installed: the peer-comparable row (`hey -n 300 -c 10`) is skipped. "
    "Install it with `sudo apt-get install -y hey` (Debian/Ubuntu) or `brew install hey`."
)


@dataclass(slots=True)
class LoadResult:
    tool: str
    requests: int
    errors: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float

    @classmethod
    def from_json(cls, data: dict[str, object]) -> LoadResult:
        return cls(**data)  # type: ignore[arg-type]


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


def choose(requested: str, prog: str) -> str:
    """The load generator to use for `--loadgen requested`: wrk when `auto` finds it, else the
    Python fallback (saying so on stderr); exits when `wrk` was asked for and is missing."""
    if requested == "auto":
        if have("wrk"):
            return "wrk"
        print(f"{prog}: {WRK_INSTALL_HINT}", file=sys.stderr, flush=True)
        return "python"
    if requested == "wrk" and not have("wrk"):
        raise SystemExit(f"{prog}: --loadgen wrk: {WRK_INSTALL_HINT}")
    return requested


def tool_version(tool: str) -> str:
    if not have(tool):
        return "not installed"
    if tool == "wrk":
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
        first = (out.stdout or out.stderr).splitlines()
        return first[0].strip() if first else "wrk"
    if tool == "hey":
        return "hey (Debian package)" if Path("/usr/bin/hey").exists() else "hey"
    return tool


# --- wrk ----------------------------------------------------------------------------------------

_WRK_SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open("{body}", "rb"))
wrk.body = f:read("*all")
f:close()

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {{"requests":%d,"duration_us":%d,"errors":%d,"p50":%d,"p90":%d,"p99":%d,' ..
    '"mean":%f}}\\n',
    summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
"""


def wrk_script(workdir: Path, body_file: Path) -> Path:
    script = workdir / (body_file.stem + ".lua")
    script.write_text(_WRK_SCRIPT.format(body=str(body_file).replace("\\", "/")))
    return script


def run_wrk(url: str, script: Path, concurrency: int, seconds: int) -> LoadResult:
    argv = [
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{max(1, seconds)}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    match = re.search(r"BENCHJSON (\{.*\})", out.stdout)
    if out.returncode != 0 or match is None:
        raise RuntimeError(
            f"wrk failed ({out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}"
        )
    data = json.loads(match.group(1))
    duration = data["duration_us"] / 1e6
    return LoadResult(
        tool="wrk",
        requests=data["requests"],
        errors=data["errors"],
        duration_s=duration,
        rps=data["requests"] / duration if duration else 0.0,
        p50_ms=data["p50"] / 1000,
        p90_ms=data["p90"] / 1000,
        p99_ms=data["p99"] / 1000,
        mean_ms=data["mean"] / 1000,
    )


# --- hey (only for the row comparable with the peers' `hey -n 300 -c 10`) ----------------------


def _hey_seconds(text: str, pattern: str) -> float:
    match = re.search(pattern, text)
    return float(match.group(1)) if match else float("nan")


def run_hey(url: str, body_file: Path, requests: int = 300, concurrency: int = 10) -> LoadResult:
    argv = [
        "hey",
        "-n",
        str(requests),
        "-c",
        str(concurrency),
        "-t",
        "10",
        "-m",
        "POST",
        "-T",
        "application/json",
        "-D",
        str(body_file),
        url,
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    text = out.stdout
    if out.returncode != 0 or "Requests/sec" not in text:
        raise RuntimeError(f"hey failed ({out.returncode}): {text[-500:]} {out.stderr[-500:]}")
    ok = sum(int(n) for n in re.findall(r"\[2\d\d\]\s+(\d+) responses", text))
    total = _hey_seconds(text, r"Total:\s+([\d.]+) secs")
    return LoadResult(
        tool="hey",
        requests=requests,
        errors=requests - ok,
        duration_s=total,
        rps=_hey_seconds(text, r"Requests/sec:\s+([\d.]+)"),
        p50_ms=_hey_seconds(text, r"50% in ([\d.]+) secs") * 1000,
        p90_ms=_hey_seconds(text, r"90% in ([\d.]+) secs") * 1000,
        p99_ms=_hey_seconds(text, r"99% in ([\d.]+) secs") * 1000,
        mean_ms=_hey_seconds(text, r"Average:\s+([\d.]+) secs") * 1000,
    )


# --- the Python fallback ------------------------------------------------------------------------


def run_python(url: str, body_file: Path, concurrency: int, seconds: float) -> LoadResult:
    """Run the aiohttp load generator below in its own process."""
    argv = [
        sys.executable,
        "-m",
        "bench.loadgen",
        "--url",
        url,
        "--body-file",
        str(body_file),
        "--concurrency",
        str(concurrency),
        "--seconds",
        str(seconds),
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, cwd=REPO_ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"python load generator failed: {out.stderr[-1000:]}")
    return LoadResult.from_json(json.loads(out.stdout.strip().splitlines()[-1]))


def percentile(values: Sequence[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


async def _load(url: str, body: bytes, concurrency: int, seconds: float) -> LoadResult:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        start = time.perf_counter()
        deadline = start + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                        ok = response.status < 400
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                if ok:
                    latencies.append((time.perf_counter() - t0) * 1000)
                else:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        duration = time.perf_counter() - start
    done = len(latencies) + errors
    return LoadResult(
        tool="python-aiohttp",
        requests=done,
        errors=errors,
        duration_s=duration,
        rps=done / duration if duration else 0.0,
        p50_ms=percentile(latencies, 50),
        p90_ms=percentile(latencies, 90),
        p99_ms=percentile(latencies, 99),
        mean_ms=statistics.fmean(latencies) if latencies else float("nan"),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("--url", required=True)
    parser.add_argument("--body-file", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    result = asyncio.run(
        _load(args.url, args.body_file.read_bytes(), args.concurrency, args.seconds)
    )
    print(json.dumps(asdict(result)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
