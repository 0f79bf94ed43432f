"""The bench's history verdict: judged from paired rounds, so that a slow patch of the machine
during one gateway's runs does not decide it. Synthetic figures: nothing is measured here."""

from __future__ import annotations

from bench import report
from bench.runner import Run, Settings


def settings(history_rounds: int = 4) -> Settings:
    return Settings(
        quick=False,
        rounds=3,
        seconds=2,
        warmup_seconds=1,
        probe_streams=15,
        chunks=50,
        delay_ms=2.0,
        loadgen="wrk",
        history="on",
        history_rounds=history_rounds,
        concurrencies=(10,),
        peer_row=False,
        floor=False,
    )


def run_with(pairs: list[tuple[float, float]], chat: tuple[float, float] | None = None) -> Run:
    run = Run(settings=settings(len(pairs)), targets=[report.GATEWAY, report.HISTORY])
    run.history_writer_seen = True
    for off, on in pairs:
        run.add("history-c10", report.GATEWAY, {"rps": off, "gw_cpu_us": 200.0})
        run.add("history-c10", report.HISTORY, {"rps": on, "gw_cpu_us": 216.0})
    if chat is not None:
        run.add("chat-c10", report.GATEWAY, {"rps": chat[0]})
        run.add("chat-c10", report.HISTORY, {"rps": chat[1]})
    return run


def test_each_round_is_compared_with_its_own_pair() -> None:
    # The machine slows down by half midway: unpaired medians would see a 45% cost.
    pairs = [(5000, 4700), (5000, 4650), (2500, 2350), (2500, 2300), (2500, 2360)]
    costs = report.paired_costs(run_with(pairs), "history-c10")
    assert [round(c, 3) for c in costs] == [0.06, 0.07, 0.06, 0.08, 0.056]
    verdict = report.history_verdict(run_with(pairs))
    assert verdict.verdict == "PASS"
    assert "c=10: +6% cost, median of 5 paired rounds" in verdict.figure
    assert "CPU per request at c=10 216 vs 200 µs (+8%)" in verdict.figure


def test_a_cost_above_the_budget_fails() -> None:
    verdict = report.history_verdict(run_with([(5000, 4300), (4800, 4100), (5100, 4500)]))
    assert verdict.verdict == "FAIL"
    assert "c=10: +14% cost" in verdict.figure


def test_without_paired_rounds_the_chat_scenario_decides() -> None:
    run = run_with([], chat=(5000, 4000))
    verdict = report.history_verdict(run)
    assert verdict.verdict == "FAIL"
    assert "c=10: 4,000 vs 5,000 req/s = +20% cost" in verdict.figure
