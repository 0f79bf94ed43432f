"""Screenshots of the tray menu, settings and history windows for the README.

Starts Xvfb with trayer as the system tray host, runs the tray app in-process against a
throw-away DESKTOP_PROXY_HOME (a demo config, an in-memory keyring, demo history rows) and
saves PNGs into docs/screenshots/. Needs the Debian packages xvfb and trayer:

    apt-get install -y xvfb trayer
    .venv/bin/python scripts/screenshots.py
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "screenshots"
DISPLAY = ":93"
SCREEN = (1280, 800)

DEMO_CONFIG: dict[str, Any] = {
    "version": 1,
    "server": {"host": "127.0.0.1", "port": 6789},
    "accessKeys": [{"name": "laptop", "key": "keyring:access-laptop"}],
    "providers": [
        {
            "name": "openai",
            "kind": "openai",
            "apiKeys": ["keyring:provider-openai"],
            "models": ["gpt-4.1", "gpt-4.1-mini", "gpt-4o-mini"],
        },
        {
            "name": "anthropic",
            "kind": "anthropic",
            "apiKeys": ["keyring:provider-anthropic"],
            "models": ["claude-sonnet-4-5", "claude-haiku-4-5"],
        },
        {
            "name": "groq",
            "kind": "groq",
            "apiKeys": ["env:GROQ_API_KEY"],
            "models": ["llama-3.3-70b-versatile", "llama-3.1-8b-instant"],
        },
        {"name": "ollama", "kind": "ollama", "models": ["qwen2.5-coder:7b"]},
    ],
    "aliases": {
        "fast": "groq:llama-3.1-8b-instant",
        "smart": "anthropic:claude-sonnet-4-5",
        "local": "ollama:qwen2.5-coder:7b",
    },
    "tiers": {
        "big": "anthropic:claude-sonnet-4-5",
        "middle": "openai:gpt-4.1",
        "small": "groq:llama-3.1-8b-instant",
    },
    "routing": {"strategy": "failover"},
    "history": {"enabled": True},
}

MODELS = (
    ("anthropic", "claude-sonnet-4-5", "anthropic", 3e-6, 15e-6),
    ("anthropic", "claude-haiku-4-5", "anthropic", 1e-6, 5e-6),
    ("openai", "gpt-4.1-mini", "openai-chat", 0.4e-6, 1.6e-6),
    ("openai", "gpt-4.1", "openai-chat", 2e-6, 8e-6),
    ("groq", "llama-3.1-8b-instant", "openai-chat", 0.05e-6, 0.08e-6),
    ("ollama", "qwen2.5-coder:7b", "openai-chat", 0.0, 0.0),
)


def demo_records(count: int = 2400) -> list[Any]:
    from desktop_proxy.history.record import RequestRecord

    rng = random.Random(7)
    now = time.time()
    records = []
    for i in range(count):
        provider, model, api, pin, pout = MODELS[rng.choices(range(6), [5, 3, 4, 2, 3, 2])[0]]
        age = (rng.random() ** 1.6) * 30 * 86400
        ok = rng.random() > 0.03
        inp, outp = rng.randint(200, 24000), rng.randint(20, 2500)
        body = {
            "model": model,
            "max_tokens": 1024,
            "messages": [{"role": "user", "content": "Summarise the diff in three bullet points."}],
        }
        reply = {"id": f"msg_{i:05d}", "content": [{"type": "text", "text": "- Adds the tray"}]}
        import json

        records.append(
            RequestRecord(
                id=f"req_{i:024x}",
                time=now - age,
                client_api=api,
                path="/v1/messages" if api == "anthropic" else "/v1/chat/completions",
                client="claude-cli/2.1" if api == "anthropic" else "openai-python/1.99",
                requested_model=model,
                provider=provider,
                model=model,
                status=200 if ok else rng.choice([429, 500, 529]),
                ok=ok,
                error=None if ok else "upstream overloaded",
                stream=api == "anthropic",
                ttfb_ms=rng.uniform(180, 900),
                duration_ms=rng.uniform(600, 14000),
                input_tokens=inp,
                output_tokens=outp,
                cost_usd=round(inp * pin + outp * pout, 6),
                request_body=json.dumps(body).encode(),
                response_body=json.dumps(reply).encode(),
            )
        )
    return records


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def _settle(app: Any, seconds: float) -> None:
    # Qt events are processed by the (qasync) loop while we sleep; calling processEvents()
    # from inside a coroutine would re-enter the loop.
    await asyncio.sleep(seconds)


async def scenario(app: Any, tray_app: Any, facade: Any) -> None:
    from PySide6.QtCore import QPoint, QRect
    from PySide6.QtWidgets import QWidget

    bridge = tray_app.bridge
    # A plain "desktop" behind the panel and menu, instead of Xvfb's black root window.
    desktop = QWidget()
    desktop.setStyleSheet("background: #d9dee5;")
    desktop.setGeometry(0, 28, SCREEN[0], SCREEN[1] - 28)
    desktop.show()
    desktop.lower()
    tray_app.tray.show()
    await facade.start_gateway()
    bridge.publish_status()
    bridge.refresh_usage()
    await _settle(app, 1.5)

    screen = app.primaryScreen()
    menu = tray_app.tray.menu
    icon = tray_app.tray.tray.geometry()
    tray_app.tray.rebuild_menu()
    size = menu.sizeHint()
    anchor = icon.bottomRight() if icon.isValid() else QPoint(SCREEN[0] - 4, 26)
    menu.popup(QPoint(anchor.x() - size.width(), anchor.y() + 2))
    await _settle(app, 1.0)
    geo = menu.geometry()
    area = QRect(geo.left() - 220, 0, geo.width() + 240, geo.bottom() + 24)
    area = area.intersected(QRect(0, 0, *SCREEN))
    screen.grabWindow(0, area.x(), area.y(), area.width(), area.height()).save(
        str(OUT / "tray-menu.png")
    )
    menu.hide()
    desktop.hide()

    tray_app.show_settings()
    settings = tray_app._settings
    settings.resize(900, 620)
    settings.tabs.setCurrentIndex(1)
    settings.provider_list.setCurrentRow(1)
    settings.test_result.setText("✓ Connected in 212 ms: 9 models available.")
    settings.test_result.setStyleSheet("color: #2e7d32;")
    await _settle(app, 1.0)
    settings.grab().save(str(OUT / "settings-providers.png"))
    settings.tabs.setCurrentIndex(2)
    await _settle(app, 0.5)
    settings.grab().save(str(OUT / "settings-aliases.png"))
    settings.tabs.setCurrentIndex(0)
    await _settle(app, 0.5)
    settings.grab().save(str(OUT / "settings-server.png"))
    settings.hide()

    tray_app.show_history()
    history = tray_app._history
    history.resize(1180, 720)
    await _settle(app, 1.5)
    history.table.selectRow(2)
    history.detail_tabs.setCurrentIndex(1)
    await _settle(app, 1.0)
    history.grab().save(str(OUT / "history.png"))
    history.hide()
    tray_app.quit()


def capture() -> None:
    import json

    import keyring
    import qasync
    from PySide6.QtWidgets import QApplication, QSystemTrayIcon

    from tests.memory_keyring import MemoryKeyring

    demo = MemoryKeyring()  # the tests' in-memory backend: never the real keyring
    demo.set_password("desktop-proxy", "provider-openai", "sk-proj-demo0000000000000001a2b")
    demo.set_password("desktop-proxy", "provider-anthropic", "sk-ant-demo000000000000000c3d4")
    demo.set_password("desktop-proxy", "access-laptop", "dp-demo-access-key-000000000000")
    keyring.set_keyring(demo)

    from desktop_proxy.gui.app import TrayApp
    from desktop_proxy.gui.facade import ServicesFacade
    from desktop_proxy.gui.memory_history import MemoryHistory
    from desktop_proxy.gui.prefs import GuiPrefs
    from desktop_proxy.gui.tasks import LoopRunner
    from desktop_proxy.paths import AppPaths
    from desktop_proxy.services import Services

    paths = AppPaths.from_environment()
    config = dict(DEMO_CONFIG)
    if not _free(6789):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            config["server"] = {"host": "127.0.0.1", "port": s.getsockname()[1]}
    paths.config_dir.mkdir(parents=True, exist_ok=True)
    paths.config_file.write_text(json.dumps(config, indent=2))

    app = QApplication(["desktop-proxy"])
    app.setQuitOnLastWindowClosed(False)
    deadline = time.monotonic() + 10
    while not QSystemTrayIcon.isSystemTrayAvailable() and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.2)
    services = Services(paths)
    services.load_config()
    history = MemoryHistory(demo_records())
    services.record_listeners.append(history.add)
    facade = ServicesFacade(services, history)
    prefs = GuiPrefs(recent_folders=[str(Path.home() / "src" / "desktop-proxy"), "/srv/api"])
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    tray_app = TrayApp(app, facade, LoopRunner(loop), prefs)
    tray_app.autostart_enabled = lambda: True  # type: ignore[method-assign]

    async def run() -> None:
        await scenario(app, tray_app, facade)
        await facade.shutdown()

    with loop:
        loop.run_until_complete(run())


def main() -> int:
    if os.environ.get("DESKTOP_PROXY_SCREENSHOT_CHILD"):
        capture()
        return 0
    from scripts.xsession import missing_tools, run_in_desktop

    if missing := missing_tools("Xvfb", "trayer"):
        print(f"screenshots: {', '.join(missing)} not installed (apt-get install -y xvfb trayer)")
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dp-shots-") as tmp:
        env = dict(os.environ)
        env.update(
            DESKTOP_PROXY_HOME=str(Path(tmp) / "home"),
            HOME=str(Path(tmp) / "user"),
            DESKTOP_PROXY_SCREENSHOT_CHILD="1",
            GROQ_API_KEY="gsk_demo",
        )
        env.pop("PYTHON_KEYRING_BACKEND", None)
        code = run_in_desktop(__file__, DISPLAY, SCREEN, env)
        if code != 0:
            return code
    for png in sorted(OUT.glob("*.png")):
        print(png.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
