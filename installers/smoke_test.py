"""Smoke-test the frozen bundle in dist/ before it is packaged: `python installers/smoke_test.py`.

Checks, against the PyInstaller output of build.spec (dist/desktop-proxy/, or on macOS
dist/Desktop Proxy.app when it exists):

1. the bundle holds what is only found at run time: the tray app (imported with importlib),
   the keyring backends and keyring's entry points, qasync, the icons, genai-prices' metadata;
2. `desktop-proxy --version`, `providers` and `config validate` work;
3. `desktop-proxy serve --port 0` starts and answers /health;
4. `DesktopProxy` (the windowed tray executable) under QT_QPA_PLATFORM=offscreen loads Qt and
   the tray app; with no system tray it falls back to headless serving, which answers /health.

Everything runs with a throwaway DESKTOP_PROXY_HOME and keyring's fail backend, so the real
config, history and keychain are never touched. Exit code 0 when all checks pass.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import runpy
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VERSION: str = runpy.run_path(str(ROOT / "desktop_proxy" / "_version.py"))["__version__"]
EXE_SUFFIX = ".exe" if sys.platform == "win32" else ""
LISTENING = re.compile(r"Listening on (http://\S+)")
# Modules PyInstaller cannot find by itself; build.spec lists them as hidden imports.
REQUIRED_MODULES = (
    "desktop_proxy.gui.app",
    "desktop_proxy.gui.tray",
    "qasync",
    "keyring.backends.SecretService",
    "keyring.backends.Windows",
    "keyring.backends.macOS",
    "keyring.backends.kwallet",
    "genai_prices",
)
TRAY_FALLBACK_SECONDS = 45.0  # the tray app waits 10 s for a system tray before going headless


@dataclass(frozen=True)
class Bundle:
    root: Path  # dist/desktop-proxy, or the .app
    gui: Path
    cli: Path
    internal: Path  # sys._MEIPASS at run time


def find_bundle(dist: Path) -> Bundle:
    app = dist / "Desktop Proxy.app"
    if sys.platform == "darwin" and app.is_dir():
        macos = app / "Contents" / "MacOS"
        return Bundle(
            app, macos / "DesktopProxy", macos / "desktop-proxy", app / "Contents" / "Frameworks"
        )
    folder = dist / "desktop-proxy"
    return Bundle(
        folder,
        folder / f"DesktopProxy{EXE_SUFFIX}",
        folder / f"desktop-proxy{EXE_SUFFIX}",
        folder / "_internal",
    )


def tree_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            file = Path(dirpath) / name
            if not file.is_symlink():
                total += file.stat().st_size
    return total


class Failed(Exception):
    pass


def check(condition: object, message: str) -> None:
    if not condition:
        raise Failed(message)


# --- processes ------------------------------------------------------------------------------


class Process:
    """A child process whose output (stdout and stderr together) is read on a thread."""

    def __init__(self, argv: Sequence[str | Path], env: dict[str, str]) -> None:
        self.argv = [str(a) for a in argv]
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.proc = subprocess.Popen(
            self.argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line.rstrip("\n"))
            self.lines.put(line)

    def wait_for_line(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                check(self.proc.poll() is None, f"exited with {self.proc.returncode}")
                continue
            if match := pattern.search(line):
                return match
        raise Failed(f"no line matching {pattern.pattern!r} within {timeout:.0f}s")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: the gateway drains and exits
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode

    def transcript(self) -> str:
        return "\n".join(f"    | {line}" for line in self.output[-30:])


def run(argv: Sequence[str | Path], env: dict[str, str], timeout: float = 60) -> str:
    done = subprocess.run(
        [str(a) for a in argv],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
    )
    check(
        done.returncode == 0,
        f"exit code {done.returncode}\n{done.stdout}{done.stderr}",
    )
    return done.stdout


def health(base_url: str) -> dict[str, object]:
    # No proxies: an http_proxy in the environment must not intercept 127.0.0.1.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{base_url}/health", timeout=5) as response:
        body: dict[str, object] = json.load(response)
    return body


def wait_for_health(base_url: str, process: Process, timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        check(process.proc.poll() is None, f"exited with {process.proc.returncode}")
        try:
            return health(base_url)
        except OSError:
            if time.monotonic() > deadline:
                raise Failed(f"{base_url}/health did not answer within {timeout:.0f}s") from None
            time.sleep(0.5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# --- checks ---------------------------------------------------------------------------------


def check_contents(bundle: Bundle) -> str:
    check(bundle.gui.is_file(), f"missing {bundle.gui}")
    check(bundle.cli.is_file(), f"missing {bundle.cli}")
    icon = bundle.internal / "resources" / "icons" / "tray-running-16.png"
    check(icon.is_file(), f"missing {icon} (icons.resources_dir looks there)")
    for dist_info, why in (
        ("genai_prices-*.dist-info", "genai_prices.__version__ reads it"),
        ("keyring-*.dist-info", "keyring finds its backends through its entry points"),
    ):
        check(any(bundle.internal.glob(dist_info)), f"missing {dist_info} ({why})")
    try:
        from PyInstaller.archive.readers import pkg_archive_contents  # type: ignore[import-untyped]
    except ImportError:
        return "module list not checked (PyInstaller is not importable here)"
    modules = set(pkg_archive_contents(str(bundle.cli)))
    missing = [name for name in REQUIRED_MODULES if name not in modules]
    check(not missing, f"modules missing from the archive: {', '.join(missing)}")
    return f"{len(modules)} archive entries, including {', '.join(REQUIRED_MODULES)}"


def check_cli(bundle: Bundle, env: dict[str, str]) -> str:
    out = run([bundle.cli, "--version"], env).strip()
    check(out == f"desktop-proxy {VERSION}", f"--version printed {out!r}")
    providers = run([bundle.cli, "providers"], env)
    check("openai" in providers, f"unexpected `providers` output:\n{providers}")
    return out


def check_serve(bundle: Bundle, env: dict[str, str], home: Path) -> str:
    """serve answers /health; a request is recorded by the history writer, which the frozen app
    starts as a second process of itself (`_history-writer`)."""
    process = Process([bundle.cli, "serve", "--port", "0"], env)
    try:
        base_url = process.wait_for_line(LISTENING, timeout=60).group(1)
        body = health(base_url)
        check(body.get("status") == "ok", f"/health answered {body}")
        check(body.get("version") == VERSION, f"/health reports version {body.get('version')}")
        status = post_chat(base_url)  # an error (no Ollama running here), recorded all the same
    except Failed as exc:
        raise Failed(f"{exc}\n{process.transcript()}") from None
    finally:
        code = process.stop()
    rows = history_rows(home / "data" / "history.sqlite3")
    check(rows == [status], f"history holds {rows}, expected the one request ({status})")
    return f"{base_url}/health ok, a {status} recorded in history (exit code {code} after SIGTERM)"


def post_chat(base_url: str) -> int:
    request = urllib.request.Request(
        f"{base_url}/v1/chat/completions",
        data=json.dumps(
            {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}
        ).encode(),
        headers={"Content-Type": "application/json"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def history_rows(path: Path) -> list[int]:
    if not path.exists():
        return []
    conn = sqlite3.connect(path)
    try:
        return [int(r[0]) for r in conn.execute("SELECT status FROM requests")]
    finally:
        conn.close()


def check_tray_app(bundle: Bundle, env: dict[str, str], home: Path) -> str:
    # A fixed free port: the windowed executable may have no stdout (Windows) to report one.
    port = free_port()
    config = home / "gui-config.json"
    config.write_text(
        json.dumps(
            {
                "version": 1,
                "server": {"host": "127.0.0.1", "port": port},
                "providers": [{"name": "ollama", "kind": "ollama", "models": []}],
            }
        ),
        encoding="utf-8",
    )
    run([bundle.cli, "--config", config, "config", "validate"], env)
    gui_env = {**env, "QT_QPA_PLATFORM": "offscreen"}
    process = Process([bundle.gui, "--config", config], gui_env)
    try:
        body = wait_for_health(f"http://127.0.0.1:{port}", process, TRAY_FALLBACK_SECONDS)
        check(body.get("status") == "ok", f"/health answered {body}")
        output = "\n".join(process.output)
        check(
            "tray app is not available" not in output,
            "the tray app could not be imported: the bundle misses desktop_proxy.gui or Qt",
        )
    except Failed as exc:
        raise Failed(f"{exc}\n{process.transcript()}") from None
    finally:
        process.stop()
    said = next((line for line in process.output if "desktop-proxy:" in line), None)
    return f"gateway up on port {port}" + (f"; it said: {said.strip()}" if said else "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("dist", nargs="?", type=Path, default=ROOT / "dist")
    args = parser.parse_args(argv)
    bundle = find_bundle(args.dist.resolve())
    print(f"Smoke test of {bundle.root} ({tree_size(bundle.root) / 2**20:.1f} MiB)", flush=True)

    home = Path(tempfile.mkdtemp(prefix="desktop-proxy-smoke-"))
    env = {
        **os.environ,
        "DESKTOP_PROXY_HOME": str(home),
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
    }
    steps: list[tuple[str, Callable[[], str]]] = [
        ("bundle contents", lambda: check_contents(bundle)),
        ("CLI --version, providers", lambda: check_cli(bundle, env)),
        ("serve --port 0 + /health + history", lambda: check_serve(bundle, env, home)),
        ("tray app (offscreen)", lambda: check_tray_app(bundle, env, home)),
    ]
    failures = 0
    try:
        for name, step in steps:
            started = time.monotonic()
            try:
                detail = step()
            except (Failed, OSError, subprocess.SubprocessError) as exc:
                failures += 1
                print(f"FAIL {name}: {exc}", flush=True)
            else:
                print(f"ok   {name} ({time.monotonic() - started:.1f}s): {detail}", flush=True)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print("Smoke test passed." if not failures else f"Smoke test: {failures} check(s) failed.")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
