"""The tray app's "done when", walked through on a real (virtual) desktop, with screenshots.

A new user starts the app, sees the tray icon, adds a provider with its key in Settings (the
key goes to the keyring, not config.json), copies the base URL into the openai SDK, watches
the requests appear in History with tokens and cost, and starts Claude Code from the menu in
a terminal. Everything runs for real — the app as `desktop-proxy` builds it, the gateway, the
SQLite history, the openai SDK, xterm and Claude Code — except the provider, which is the
tests' fake upstream on 127.0.0.1, and the keyring, an in-memory one.

    apt-get install -y xvfb trayer xterm
    .venv/bin/python scripts/walkthrough.py [OUTPUT_DIR]

Claude Code is the one the end-to-end tests install (`.cache/e2e-clients`; run `make test`
once first). Prints each step with what it checked; exits non-zero when a check fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DISPLAY = ":94"
SCREEN = (1280, 800)
KEY = "sk-walkthrough-0000000000000000000000000001"
CLAUDE_BIN = ROOT / ".cache" / "e2e-clients" / "node_modules" / ".bin"


def step(text: str) -> None:
    print(f"[walkthrough] {text}", flush=True)


class Failed(Exception):
    pass


def check(condition: object, what: str) -> None:
    if not condition:
        raise Failed(what)
    step(f"  ok: {what}")


async def wait_until(predicate: Any, what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise Failed(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)
    step(f"  ok: {what}")


def shoot(app: Any, out: Path, name: str) -> None:
    path = out / f"walkthrough-{name}.png"
    app.primaryScreen().grabWindow(0).save(str(path))
    step(f"  screenshot {path}")


async def scenario(app: Any, out: Path) -> None:
    import openai
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    from desktop_proxy.gui.app import build_tray_app
    from desktop_proxy.gui.prefs import GuiPrefs
    from desktop_proxy.paths import AppPaths
    from desktop_proxy.services import Services
    from tests.fakes.upstream import FakeUpstream, Reply, Usage

    fake = await FakeUpstream(api_key=KEY).start()
    fake.default_reply = Reply.text(
        "Hello from the provider.", usage=Usage(input_tokens=1200, output_tokens=40)
    )
    paths = AppPaths.from_environment()
    services = Services(paths)
    services.load_config()
    first_run = services.created_config
    # A local fake has no list price: give its models one, as a user would for a custom model.
    config = services.config
    assert config is not None
    raw = json.loads(services.config_path.read_text())
    raw.setdefault("history", {})["prices"] = {"gpt-4o-mini": {"input": 2.5, "output": 10.0}}
    services.config_path.write_text(json.dumps(raw, indent=2))
    services.load_config()

    records: list[Any] = []
    services.record_listeners.append(records.append)
    loop = asyncio.get_running_loop()
    tray_app = build_tray_app(app, services, loop, GuiPrefs(), first_run=first_run)
    main = asyncio.ensure_future(tray_app.main())
    facade = tray_app.facade

    step("1. the app starts: tray icon, gateway running")
    await wait_until(lambda: tray_app.tray.tray.isVisible(), "the tray icon is shown")
    await wait_until(lambda: tray_app.bridge.status().running, "the gateway is running")
    await asyncio.sleep(1.0)
    shoot(app, out, "1-tray")

    step("2. Settings: add OpenAI from its preset, point it at the provider, paste the key")
    tray_app.show_settings()
    settings = tray_app._settings
    await asyncio.sleep(0.5)
    settings.tabs.setCurrentIndex(1)
    settings.add_provider("openai")
    settings.p_url.selectAll()
    QTest.keyClicks(settings.p_url, fake.openai_base)  # typed, as a user would
    settings.ask_key = lambda provider: ("keyring", KEY)
    settings.add_key()
    await asyncio.sleep(0.5)
    shoot(app, out, "2-settings")
    check(settings.apply_button.isEnabled(), f"the form is valid ({settings.problems})")
    settings.apply()
    await wait_until(
        lambda: facade.config.provider("openai") is not None, "the provider is applied"
    )
    text = services.config_path.read_text()
    check(KEY not in text, "the key is not in config.json")
    saved = json.loads(text)
    openai_cfg = next(p for p in saved["providers"] if p["name"] == "openai")
    check(
        openai_cfg["apiKeys"] == ["keyring:provider-openai"],
        f"config.json references the keyring entry ({openai_cfg['apiKeys']})",
    )
    import keyring

    check(
        keyring.get_password("desktop-proxy", "provider-openai") == KEY,
        "the key is in the keyring",
    )
    # Claude Code's tiers go to the new provider too.
    for box in settings.tier_boxes.values():
        box.setCurrentText("openai:gpt-4o-mini")
    settings.apply()
    await wait_until(
        lambda: facade.config.tiers.middle == "openai:gpt-4o-mini",
        "the tiers point at openai:gpt-4o-mini",
    )
    settings.hide()

    step("3. Copy base URL (OpenAI) from the tray menu, use it in the openai SDK")
    tray_app.tray.rebuild_menu()
    tray_app.tray.copy_openai.trigger()
    await asyncio.sleep(0.2)
    base_url = QApplication.clipboard().text()
    check(base_url.endswith("/v1"), f"the clipboard holds the base URL ({base_url})")

    def use_sdk() -> tuple[str, str]:
        with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0) as client:
            whole = client.chat.completions.create(
                model="openai:gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}]
            )
            stream = client.chat.completions.create(
                model="openai:gpt-4o-mini",
                messages=[{"role": "user", "content": "Hi again"}],
                stream=True,
            )
            streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            return whole.choices[0].message.content or "", streamed

    whole, streamed = await asyncio.to_thread(use_sdk)
    check(whole == streamed == "Hello from the provider.", "both answers came back")
    check(
        [r.header("authorization") for r in fake.requests] == [f"Bearer {KEY}"] * 2,
        "the provider got the key from the keyring",
    )

    step("4. History: the requests appear with tokens and cost")
    tray_app.show_history()
    history = tray_app._history
    history.resize(1180, 700)
    await wait_until(lambda: history.model.rowCount() >= 2, "two rows in the history table")
    # 2 × (1200 in × $2.5/M + 40 out × $10/M) = $0.0068
    await wait_until(
        lambda: history.summary_label.text().startswith("2 requests"),
        "the summary counts both requests",
        seconds=6,
    )
    history.table.selectRow(0)
    await asyncio.sleep(0.5)
    shoot(app, out, "3-history")
    summary = history.summary_label.text()
    step(f"  summary strip: {summary}")
    check("2.4k tokens in" in summary or "2,400 tokens in" in summary, "with their tokens")
    check("$0.0068" in summary or "$0.01" in summary, "and their cost")
    history.hide()

    step("5. Launch Claude Code from the menu, in a folder, in a terminal")
    folder = Path(os.environ["HOME"]) / "project"
    folder.mkdir(parents=True, exist_ok=True)
    (Path(os.environ["HOME"]) / ".claude.json").write_text(
        json.dumps(
            {
                "hasCompletedOnboarding": True,
                "projects": {str(folder): {"hasTrustDialogAccepted": True}},
            }
        )
    )
    before = len(fake.requests)
    tray_app.launch_claude(folder)
    # No window manager here: give the terminal the keyboard focus directly, then type. Claude
    # Code takes a few seconds to start (longer on a cold disk): type again if nothing came.
    window = ""
    for attempt in range(3):
        await asyncio.sleep(12)
        if attempt == 0:
            shoot(app, out, "4-claude-code-started")
        found = await asyncio.to_thread(
            subprocess.run,
            ["xdotool", "search", "--class", "xterm"],
            capture_output=True,
            text=True,
            check=False,
        )
        window = found.stdout.split()[-1] if found.stdout.split() else window
        check(window, "a terminal window opened")
        for keys in (
            ["windowfocus", "--sync", window],
            ["type", "--delay", "40", "Say hello"],
            ["key", "Return"],
        ):
            await asyncio.to_thread(subprocess.run, ["xdotool", *keys], check=False)
        try:
            await wait_until(
                lambda: any(r.path == "/v1/chat/completions" for r in fake.requests[before:]),
                "Claude Code's request reached the provider through the gateway",
                seconds=30,
            )
            break
        except Failed:
            if attempt == 2:
                raise
            step("  Claude Code did not take the prompt yet; typing it again")
    await asyncio.sleep(6)
    shoot(app, out, "5-claude-code")
    claude = [r for r in records if r.client_api == "anthropic" and r.provider == "openai"]
    check(
        claude and all(r.ok for r in claude), f"{len(claude)} Claude Code request(s) recorded, ok"
    )
    step(f"  e.g. {claude[-1].requested_model} → {claude[-1].provider}:{claude[-1].model}")
    tray_app.quit()
    await main
    await fake.stop()


def child(out: Path) -> int:
    import keyring
    import qasync
    from PySide6.QtWidgets import QApplication, QSystemTrayIcon

    from tests.memory_keyring import MemoryKeyring

    keyring.set_keyring(MemoryKeyring())
    app = QApplication(["desktop-proxy"])
    app.setQuitOnLastWindowClosed(False)
    deadline = time.monotonic() + 10
    while not QSystemTrayIcon.isSystemTrayAvailable() and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.2)
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    try:
        with loop:
            loop.run_until_complete(scenario(app, out))
    except Failed as exc:
        step(f"FAILED: {exc}")
        return 1
    step("all steps passed")
    return 0


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="dp-walk-"))
    if os.environ.get("DESKTOP_PROXY_WALKTHROUGH_CHILD"):
        return child(out)
    from scripts.xsession import missing_tools, run_in_desktop

    if missing := missing_tools("Xvfb", "trayer", "xterm", "xdotool"):
        print(f"walkthrough: {', '.join(missing)} not installed (apt-get install -y xvfb "
              "trayer xterm xdotool)")  # fmt: skip
        return 1
    if not (CLAUDE_BIN / "claude").exists():
        print(f"walkthrough: Claude Code is not installed in {CLAUDE_BIN}; run `make test` once")
        return 1
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dp-walk-") as tmp:
        env = {k: v for k, v in os.environ.items() if k != "PYTHON_KEYRING_BACKEND"}
        env.update(
            DESKTOP_PROXY_HOME=str(Path(tmp) / "home"),
            HOME=str(Path(tmp) / "user"),
            DESKTOP_PROXY_WALKTHROUGH_CHILD="1",
            PATH=f"{CLAUDE_BIN}{os.pathsep}{env.get('PATH', '')}",
            TERMINAL="xterm",
            DISABLE_TELEMETRY="1",
            CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        )
        Path(env["HOME"]).mkdir(parents=True)
        return run_in_desktop(__file__, DISPLAY, SCREEN, env, args=[str(out)], timeout=240)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
