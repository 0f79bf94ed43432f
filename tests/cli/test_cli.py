"""The command line, driven as a user would: in a subprocess, with a private DESKTOP_PROXY_HOME."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PYTHON = sys.executable


def cli_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESKTOP_PROXY")}
    env["DESKTOP_PROXY_HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    # A subprocess must never reach the real OS keyring.
    env["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"
    env.pop("OPENAI_API_KEY", None)
    return env


def run_cli(home: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "desktop_proxy", *args],
        env=cli_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextmanager
def serving(
    home: Path, *args: str, preamble: str = ""
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Start `desktop-proxy serve` and yield (process, base URL) once it says it listens."""
    code = preamble + "from desktop_proxy.entry import main; raise SystemExit(main())"
    proc = subprocess.Popen(
        [PYTHON, "-c", code, "serve", *args],
        env=cli_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("Listening on "):
            proc.kill()
            _, err = proc.communicate(timeout=10)
            pytest.fail(f"serve did not start: {line!r} {err}")
        yield proc, line.split("Listening on ", 1)[1].strip()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if proc.stderr is not None:
            STDERR[proc.pid] = proc.stderr.read()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


STDERR: dict[int, str] = {}  # what each `serving` process wrote to stderr, once it has exited


def write_config(home: Path, data: object) -> Path:
    path = home / "config" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_version_prints_the_version(tmp_path: Path) -> None:
    """`--version` prints the product name and version."""
    from desktop_proxy import __version__

    result = run_cli(tmp_path, "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"desktop-proxy {__version__}"


def test_serve_with_port_zero_prints_urls_and_answers_health(tmp_path: Path) -> None:
    """`serve --port 0` picks a free port, prints the base URLs, and serves /health."""
    write_config(tmp_path, {"providers": [{"name": "local", "kind": "ollama", "models": ["m"]}]})
    with serving(tmp_path, "--port", "0") as (proc, url):
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == f"OpenAI base URL:    {url}/v1"
        assert proc.stdout.readline().strip() == f"Anthropic base URL: {url}"
        with urllib.request.urlopen(url + "/health", timeout=5) as resp:
            health = json.load(resp)
        assert health["status"] == "ok"
        assert [p["name"] for p in health["providers"]] == ["local"]
    assert proc.returncode == 0


def test_first_run_writes_default_ollama_config_and_says_how_to_add_providers(
    tmp_path: Path,
) -> None:
    """With no config file, serve starts on a local-Ollama default and explains what to do next."""
    with serving(tmp_path, "--port", "0") as (proc, url):
        with urllib.request.urlopen(url + "/health", timeout=5) as resp:
            health = json.load(resp)
        assert [p["kind"] for p in health["providers"]] == ["ollama"]
    err = STDERR[proc.pid]
    assert "No configuration found" in err and "To add providers, edit" in err
    config = tmp_path / "config" / "config.json"
    assert json.loads(config.read_text())["providers"][0]["kind"] == "ollama"
    if os.name == "posix":
        assert config.stat().st_mode & 0o777 == 0o600


def test_port_in_use_is_a_clear_message_with_exit_code_2(tmp_path: Path) -> None:
    """A busy port names the port, suggests --port, exits 2, and shows no traceback."""
    write_config(tmp_path, {"providers": []})
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli(tmp_path, "serve", "--port", str(port))
    assert result.returncode == 2
    assert f"Port {port}" in result.stderr
    assert "--port" in result.stderr
    assert "Traceback" not in result.stderr


def test_broken_config_names_file_and_key_path_without_traceback(tmp_path: Path) -> None:
    """An invalid config exits non-zero naming the file, the key path and the problem."""
    path = write_config(
        tmp_path,
        {
            "providers": [
                {"name": "a", "kind": "openai"},
                {"name": "b", "kind": "openai", "baseUrl": "ftp://nope"},
            ]
        },
    )
    for args in (("serve", "--port", "0"), ("config", "validate")):
        result = run_cli(tmp_path, *args)
        assert result.returncode != 0
        assert str(path) in result.stderr
        assert "providers[1].baseUrl" in result.stderr
        assert "Traceback" not in result.stderr


def test_invalid_json_config_points_at_the_line(tmp_path: Path) -> None:
    """A config that is not JSON says where parsing failed."""
    write_config(tmp_path, '{"providers": [\n  {"name": "a",,}\n]}')
    result = run_cli(tmp_path, "config", "validate")
    assert result.returncode != 0
    assert "line 2" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_show_masks_literal_secrets(tmp_path: Path) -> None:
    """`config show` never prints a literal key, but shows env references as they are."""
    write_config(
        tmp_path,
        {
            "accessKeys": [{"name": "me", "key": "dp-supersecretaccesskey1234"}],
            "providers": [
                {
                    "name": "o",
                    "kind": "openai",
                    "apiKeys": ["sk-literalsecretvalue9876", "env:OPENAI_API_KEY"],
                }
            ],
        },
    )
    result = run_cli(tmp_path, "config", "show")
    assert result.returncode == 0, result.stderr
    assert "sk-literalsecretvalue9876" not in result.stdout
    assert "dp-supersecretaccesskey1234" not in result.stdout
    assert "env:OPENAI_API_KEY" in result.stdout
    assert "9876" in result.stdout  # the last four, so the user can tell keys apart


def test_config_path_honours_desktop_proxy_home(tmp_path: Path) -> None:
    """DESKTOP_PROXY_HOME relocates the config file."""
    result = run_cli(tmp_path, "config", "path")
    assert Path(result.stdout.strip()) == tmp_path / "config" / "config.json"


def test_models_lists_provider_models_and_aliases(tmp_path: Path) -> None:
    """`models` lists provider:model ids and aliases from the config."""
    write_config(
        tmp_path,
        {
            "providers": [{"name": "local", "kind": "ollama", "models": ["llama3:8b"]}],
            "aliases": {"fast": "local:llama3:8b"},
        },
    )
    result = run_cli(tmp_path, "models")
    assert result.returncode == 0, result.stderr
    assert "local:llama3:8b" in result.stdout
    assert "fast" in result.stdout


def test_providers_lists_presets_and_configured(tmp_path: Path) -> None:
    """`providers` lists every preset kind and the configured providers."""
    write_config(tmp_path, {"providers": [{"name": "mine", "kind": "groq", "apiKey": "env:GROQ"}]})
    result = run_cli(tmp_path, "providers")
    assert result.returncode == 0, result.stderr
    for kind in (
        "openai",
        "anthropic",
        "gemini",
        "openrouter",
        "groq",
        "together",
        "cohere",
        "deepseek",
        "mistral",
        "ollama",
        "lmstudio",
        "azure",
    ):
        assert kind in result.stdout
    assert "mine" in result.stdout and "env:GROQ" in result.stdout


def test_non_loopback_bind_without_key_refuses_to_start(tmp_path: Path) -> None:
    """Serving 0.0.0.0 with no access key is refused unless the insecure flag is given."""
    write_config(tmp_path, {"providers": []})
    result = run_cli(tmp_path, "serve", "--host", "0.0.0.0", "--port", "0")
    assert result.returncode != 0
    assert "access key" in result.stderr and "--insecure-no-auth" in result.stderr
    assert "Traceback" not in result.stderr


def test_generated_key_is_printed_once_and_required(tmp_path: Path) -> None:
    """`serve -g` prints a fresh key, and requests without it get a 401."""
    write_config(tmp_path, {"providers": []})
    with serving(tmp_path, "--port", "0", "-g") as (proc, url):
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        key = lines[2].rsplit(" ", 1)[1].strip()
        assert key.startswith("dp-")
        request = urllib.request.Request(url + "/v1/models")
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(request, timeout=5)
        assert denied.value.code == 401
        denied.value.close()
        request.add_header("Authorization", f"Bearer {key}")
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 200


def test_serve_never_imports_qt(tmp_path: Path) -> None:
    """The headless gateway starts and serves with PySide6 and qasync made unimportable."""
    write_config(tmp_path, {"providers": []})
    block_qt = "import sys; sys.modules['PySide6'] = None; sys.modules['qasync'] = None\n"
    with serving(tmp_path, "--port", "0", preamble=block_qt) as (_proc, url):
        deadline = time.monotonic() + 5
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as resp:
                    assert resp.status == 200
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise


def test_core_modules_do_not_import_qt() -> None:
    """Importing the CLI, services, server and protocols leaves PySide6 and qasync unloaded."""
    code = (
        "import sys\n"
        "import desktop_proxy.cli, desktop_proxy.services, desktop_proxy.server.app\n"
        "import desktop_proxy.protocols.anthropic, desktop_proxy.protocols.openai_chat\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('PySide6', 'qasync'))\n"
        "print(bad)\n"
    )
    result = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_config_flag_before_or_after_the_command_is_honoured(tmp_path: Path) -> None:
    """`--config FILE` works both before the command and after it."""
    other = tmp_path / "elsewhere.json"
    other.write_text(json.dumps({"providers": [{"name": "x", "kind": "ollama", "models": ["m"]}]}))
    for args in (
        ("--config", str(other), "config", "path"),
        ("config", "path", "--config", str(other)),
    ):
        result = run_cli(tmp_path, *args)
        assert result.returncode == 0, result.stderr
        assert Path(result.stdout.strip()) == other
    result = run_cli(tmp_path, "--config", str(other), "models")
    assert "x:m" in result.stdout
