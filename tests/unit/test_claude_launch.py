"""`desktop-proxy launch claude`: the child's environment, finding `claude`, --print-env, and the
embedded gateway's lifecycle around a fake `claude` executable."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from desktop_proxy.config.loader import parse_config
from desktop_proxy.config.secrets import SecretResolver
from desktop_proxy.launch.claude_code import (
    CLAUDE_INSTALL_HINT,
    DEFAULT_API_TIMEOUT_MS,
    PLACEHOLDER_TOKEN,
    ClaudeModels,
    claude_candidates,
    claude_env,
    default_shell_style,
    env_changes,
    exit_code,
    find_claude,
    format_env,
    has_settings_flag,
    is_gateway_health,
    merge_no_proxy,
    read_settings_overrides,
    run_claude,
    settings_messages,
    settings_override_args,
)
from desktop_proxy.paths import AppPaths
from desktop_proxy.services import GatewayOptions, Services

PYTHON = sys.executable
POSIX_ONLY = pytest.mark.skipif(
    sys.platform == "win32", reason="the fake `claude` is a POSIX script with a shebang line"
)

# --- claude_env ---------------------------------------------------------------------------------


def test_env_points_at_gateway_with_access_key() -> None:
    """The access key becomes ANTHROPIC_AUTH_TOKEN and the base URL is the gateway's."""
    env = claude_env("http://127.0.0.1:6789", "dp-key", base_env={"PATH": "/bin"}, windows=False)
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:6789"
    assert env["ANTHROPIC_AUTH_TOKEN"] == "dp-key"
    assert env["PATH"] == "/bin"


def test_env_uses_placeholder_token_for_open_gateway() -> None:
    """Without an access key a placeholder token is set, so Claude Code does not ask to log in."""
    env = claude_env("http://127.0.0.1:1", None, base_env={}, windows=False)
    assert env["ANTHROPIC_AUTH_TOKEN"] == PLACEHOLDER_TOKEN


def test_env_removes_api_key_and_old_anthropic_settings() -> None:
    """ANTHROPIC_API_KEY is dropped (it would win over the token) and older values are replaced."""
    base = {
        "ANTHROPIC_API_KEY": "sk-ant-real",
        "ANTHROPIC_AUTH_TOKEN": "old",
        "ANTHROPIC_BASE_URL": "https://api.anthropic.com",
    }
    env = claude_env("http://127.0.0.1:2", "dp-key", base_env=base, windows=False)
    assert "ANTHROPIC_API_KEY" not in env
    assert env["ANTHROPIC_AUTH_TOKEN"] == "dp-key"
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:2"
    assert base["ANTHROPIC_API_KEY"] == "sk-ant-real"  # the caller's mapping is not modified


def test_env_merges_loopback_into_no_proxy_keeping_entries() -> None:
    """Loopback is appended to NO_PROXY and no_proxy, existing entries kept, nothing doubled."""
    base = {"NO_PROXY": "corp.example, 127.0.0.1", "no_proxy": ".internal", "HTTPS_PROXY": "x"}
    env = claude_env("http://127.0.0.1:3", None, base_env=base, windows=False)
    expected = "corp.example,127.0.0.1,.internal,localhost,::1"
    assert env["NO_PROXY"] == expected
    assert env["no_proxy"] == expected
    assert env["HTTPS_PROXY"] == "x"


def test_env_sets_no_proxy_when_absent() -> None:
    """With no NO_PROXY at all, both spellings get the loopback hosts."""
    env = claude_env("http://127.0.0.1:3", None, base_env={}, windows=False)
    assert env["NO_PROXY"] == env["no_proxy"] == "localhost,127.0.0.1,::1"


def test_env_on_windows_keeps_one_spelling_per_variable() -> None:
    """On Windows (case-insensitive names) one NO_PROXY and no Anthropic_Api_Key variant remain."""
    base = {"No_Proxy": "corp.example", "Anthropic_Api_Key": "sk", "api_timeout_ms": "5"}
    env = claude_env("http://127.0.0.1:4", None, base_env=base, windows=True)
    assert env["NO_PROXY"] == "corp.example,localhost,127.0.0.1,::1"
    assert [k for k in env if k.upper() == "NO_PROXY"] == ["NO_PROXY"]
    assert not [k for k in env if k.upper() == "ANTHROPIC_API_KEY"]
    assert env["api_timeout_ms"] == "5" and "API_TIMEOUT_MS" not in env


def test_env_api_timeout_default_and_kept_when_set() -> None:
    """API_TIMEOUT_MS defaults to a generous value but the user's own setting wins."""
    assert claude_env("u", None, base_env={})["API_TIMEOUT_MS"] == DEFAULT_API_TIMEOUT_MS
    kept = claude_env("u", None, base_env={"API_TIMEOUT_MS": "1234"})
    assert kept["API_TIMEOUT_MS"] == "1234"


def test_env_tier_models_and_output_tokens_only_when_asked() -> None:
    """Tier model variables and CLAUDE_CODE_MAX_OUTPUT_TOKENS are set only on request."""
    plain = claude_env("u", None, base_env={})
    assert not [k for k in plain if k.startswith("ANTHROPIC_DEFAULT_")]
    assert "CLAUDE_CODE_MAX_OUTPUT_TOKENS" not in plain
    env = claude_env(
        "u",
        None,
        base_env={},
        tiers=ClaudeModels(opus="big-one", haiku="fast"),
        max_output_tokens=8192,
    )
    assert env["ANTHROPIC_DEFAULT_OPUS_MODEL"] == "big-one"
    assert env["ANTHROPIC_DEFAULT_HAIKU_MODEL"] == "fast"
    assert "ANTHROPIC_DEFAULT_SONNET_MODEL" not in env
    assert env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == "8192"


def test_merge_no_proxy_ignores_case_and_blanks() -> None:
    """Entries are deduplicated case-insensitively and empty items are dropped."""
    assert merge_no_proxy("LOCALHOST,, a ", None) == "LOCALHOST,a,127.0.0.1,::1"


# --- find_claude --------------------------------------------------------------------------------


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


@POSIX_ONLY
def test_find_claude_on_path(tmp_path: Path) -> None:
    """`claude` is found on the PATH given in the environment mapping."""
    claude = _executable(tmp_path / "bin" / "claude")
    env = {"PATH": f"{tmp_path / 'empty'}{os.pathsep}{claude.parent}", "HOME": str(tmp_path)}
    assert find_claude(env, windows=False) == claude


@POSIX_ONLY
def test_find_claude_in_usual_install_locations(tmp_path: Path) -> None:
    """Off PATH, the native installer's ~/.local/bin and ~/.claude/local are searched."""
    env = {"PATH": str(tmp_path / "empty"), "HOME": str(tmp_path)}
    assert find_claude(env, windows=False) is None
    local = _executable(tmp_path / ".claude" / "local" / "claude")
    assert find_claude(env, windows=False) == local
    native = _executable(tmp_path / ".local" / "bin" / "claude")
    assert find_claude(env, windows=False) == native


@POSIX_ONLY
def test_find_claude_skips_non_executable_files(tmp_path: Path) -> None:
    """A `claude` file without the executable bit is not a usable binary."""
    stub = tmp_path / ".local" / "bin" / "claude"
    stub.parent.mkdir(parents=True)
    stub.write_text("not a program")
    assert find_claude({"PATH": "", "HOME": str(tmp_path)}, windows=False) is None


def test_windows_candidates_include_npm_shim_and_native_install() -> None:
    """On Windows the npm global shim in %APPDATA%\\npm and the native claude.exe are searched."""
    env = {"USERPROFILE": "C:/Users/me", "APPDATA": "C:/Users/me/AppData/Roaming"}
    candidates = [c.as_posix() for c in claude_candidates(env, windows=True)]
    assert "C:/Users/me/.local/bin/claude.exe" in candidates
    assert "C:/Users/me/AppData/Roaming/npm/claude.cmd" in candidates


def test_posix_candidates_include_npm_prefix() -> None:
    """NPM_CONFIG_PREFIX's bin directory is searched on POSIX."""
    env = {"HOME": "/home/me", "NPM_CONFIG_PREFIX": "/opt/npm"}
    assert Path("/opt/npm/bin/claude") in claude_candidates(env, windows=False)


# --- printing the environment --------------------------------------------------------------------


def test_env_changes_lists_set_and_unset() -> None:
    """Only new or changed values are listed as set; vanished ones as unset."""
    changed, removed = env_changes({"A": "1", "B": "2", "K": "x"}, {"A": "1", "B": "3", "C": "4"})
    assert changed == {"B": "3", "C": "4"}
    assert removed == ["K"]


def test_format_env_styles_quote_values() -> None:
    """POSIX, PowerShell and cmd lines quote values the way each shell needs."""
    values = {"V": "it's a b"}
    assert format_env(values, ["K"], style="posix") == "unset K\nexport V='it'\"'\"'s a b'"
    assert format_env(values, ["K"], style="powershell").splitlines() == [
        "Remove-Item Env:K -ErrorAction SilentlyContinue",
        "$env:V = 'it''s a b'",
    ]
    assert format_env(values, ["K"], style="cmd").splitlines() == ['set "K="', 'set "V=it\'s a b"']


def test_default_shell_style_by_platform() -> None:
    """POSIX everywhere except a Windows console (PowerShell); Git Bash counts as POSIX."""
    assert default_shell_style({}, windows=False) == "posix"
    assert default_shell_style({"PSModulePath": "x"}, windows=True) == "powershell"
    assert default_shell_style({"MSYSTEM": "MINGW64"}, windows=True) == "posix"


# --- settings files (read, never written) ------------------------------------------------------


def test_settings_overrides_detected_and_overridden_per_session(tmp_path: Path) -> None:
    """A settings file's env.ANTHROPIC_* keys are detected and countered with --settings JSON."""
    user = tmp_path / "settings.json"
    user.write_text(
        json.dumps({"env": {"ANTHROPIC_BASE_URL": "http://x", "ANTHROPIC_API_KEY": "k"}})
    )
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    found = read_settings_overrides([user, broken, tmp_path / "missing.json"])
    assert found == {user: ["env.ANTHROPIC_BASE_URL", "env.ANTHROPIC_API_KEY"]}
    env = {"ANTHROPIC_BASE_URL": "http://127.0.0.1:5", "ANTHROPIC_AUTH_TOKEN": "t"}
    args = settings_override_args(found[user], env)
    assert args[0] == "--settings"
    assert json.loads(args[1]) == {
        "env": {"ANTHROPIC_BASE_URL": "http://127.0.0.1:5", "ANTHROPIC_API_KEY": ""}
    }
    assert settings_override_args(["apiKeyHelper"], env) == []
    assert "not edited" in settings_messages(found, overridden=True)[0]


def test_user_settings_flag_is_respected() -> None:
    """A --settings the user passed is never doubled by the launcher."""
    assert has_settings_flag(["-p", "x", "--settings", "{}"])
    assert has_settings_flag(["--settings={}"])
    assert not has_settings_flag(["-p", "--settings-like"])


def test_exit_code_of_signalled_child() -> None:
    """A child killed by a signal reports 128 + signal, like a shell."""
    assert exit_code(3) == 3
    assert exit_code(-9) == 137


def test_health_json_recognised() -> None:
    """Only desktop-proxy's /health shape counts as a running gateway."""
    ok = {"status": "ok", "version": "1", "accessKeyRequired": False, "providers": []}
    assert is_gateway_health(ok)
    assert not is_gateway_health({"status": "ok"})
    assert not is_gateway_health([ok])


# --- the CLI in a subprocess ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_config(home: Path, data: dict[str, Any]) -> None:
    (home / "config").mkdir(parents=True, exist_ok=True)
    (home / "config" / "config.json").write_text(json.dumps(data))


def _config(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "server": {"port": port},
        "providers": [
            {
                "name": "up",
                "kind": "openai",
                "baseUrl": "http://127.0.0.1:9/v1",
                "apiKey": "sk-upstream-never-used",
                "models": ["gpt-4o"],
            }
        ],
        **extra,
    }


def _cli_env(tmp_path: Path, path: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DESKTOP_PROXY", "ANTHROPIC"))}
    env.update(
        DESKTOP_PROXY_HOME=str(tmp_path / "dp"),
        HOME=str(tmp_path / "user-home"),
        PATH=path,
        PYTHONUNBUFFERED="1",
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
    )
    env.update(extra)
    return env


def _run_cli(
    tmp_path: Path, env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "desktop_proxy", *args],
        env=env,
        cwd=cwd or tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


@POSIX_ONLY
def test_print_env_is_pasteable_into_a_posix_shell(tmp_path: Path) -> None:
    """--print-env prints exports that, evaluated by sh, give the launch environment."""
    port = _free_port()
    _write_config(tmp_path / "dp", _config(port))
    env = _cli_env(
        tmp_path, os.environ.get("PATH", ""), ANTHROPIC_API_KEY="sk-ant-x", NO_PROXY="corp.example"
    )
    result = _run_cli(tmp_path, env, "launch", "claude", "--print-env")
    assert result.returncode == 0, result.stderr
    assert "unset ANTHROPIC_API_KEY" in result.stdout
    assert f"no gateway is running at http://127.0.0.1:{port}" in result.stderr
    script = (
        result.stdout
        + '\nprintf "%s|%s|%s|%s|%s" "$ANTHROPIC_BASE_URL" '
        + ('"$ANTHROPIC_AUTH_TOKEN" "${ANTHROPIC_API_KEY-unset}" "$NO_PROXY" "$API_TIMEOUT_MS"')
    )
    shell = subprocess.run(
        ["sh", "-c", script], env=env, capture_output=True, text=True, timeout=10, check=True
    )
    assert shell.stdout.split("|") == [
        f"http://127.0.0.1:{port}",
        PLACEHOLDER_TOKEN,
        "unset",
        "corp.example,localhost,127.0.0.1,::1",
        DEFAULT_API_TIMEOUT_MS,
    ]


def test_print_env_uses_configured_access_key(tmp_path: Path) -> None:
    """With accessKeys in the config, the first key is printed as the token (PowerShell style)."""
    keys = [{"name": "a", "key": "dp-first-key-123456"}, {"name": "b", "key": "dp-second-key-1"}]
    _write_config(tmp_path / "dp", _config(_free_port(), accessKeys=keys))
    env = _cli_env(tmp_path, os.environ.get("PATH", ""))
    result = _run_cli(tmp_path, env, "launch", "claude", "--print-env", "--shell", "powershell")
    assert result.returncode == 0, result.stderr
    assert "$env:ANTHROPIC_AUTH_TOKEN = 'dp-first-key-123456'" in result.stdout.splitlines()


def test_missing_claude_binary_exits_127_with_install_hint(tmp_path: Path) -> None:
    """Without `claude` anywhere, one line names the install command and the exit code is 127."""
    _write_config(tmp_path / "dp", _config(_free_port()))
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    result = _run_cli(tmp_path, _cli_env(tmp_path, str(empty)), "launch", "claude", "--", "-p", "x")
    assert result.returncode == 127
    assert result.stderr.strip().splitlines() == [
        f"desktop-proxy: Claude Code (`claude`) was not found on PATH. "
        f"Install it with: {CLAUDE_INSTALL_HINT}"
    ]
    assert "Traceback" not in result.stderr and result.stdout == ""


FAKE_CLAUDE = """#!{python}
import json, os, sys, urllib.request

NAMES = ("ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_API_KEY", "NO_PROXY",
         "no_proxy", "API_TIMEOUT_MS", "HTTP_PROXY")
report = {{"argv": sys.argv[1:], "env": {{n: os.environ.get(n) for n in NAMES}}}}
base = os.environ["ANTHROPIC_BASE_URL"]
token = os.environ["ANTHROPIC_AUTH_TOKEN"]
for path in ("/health", "/v1/models"):
    request = urllib.request.Request(base + path, headers={{"Authorization": "Bearer " + token}})
    # urllib honours HTTP_PROXY and no_proxy, like Claude Code does.
    with urllib.request.urlopen(request, timeout=10) as response:
        report[path] = [response.status, json.load(response)]
with open(os.environ["FAKE_CLAUDE_REPORT"], "w") as f:
    json.dump(report, f)
sys.exit(int(os.environ.get("FAKE_CLAUDE_EXIT", "3")))
"""


def _fake_claude(bin_dir: Path) -> Path:
    return _executable_text(bin_dir / "claude", FAKE_CLAUDE.format(python=PYTHON))


def _executable_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # ignores *_PROXY


def _health_status(url: str) -> int:
    with DIRECT.open(url + "/health", timeout=5) as response:
        return int(response.status)


def _refused(url: str) -> bool:
    try:
        _health_status(url)
    except urllib.error.URLError as exc:
        return isinstance(exc.reason, ConnectionRefusedError)
    return False


@POSIX_ONLY
def test_embedded_gateway_lives_for_the_child_and_exit_code_is_forwarded(tmp_path: Path) -> None:
    """With no gateway running, an embedded one serves the child, which sees the launch env and
    the access key works; the child's exit code is returned and the gateway is gone after."""
    configured_port = _free_port()
    key = "dp-launch-key-0123456789"
    _write_config(
        tmp_path / "dp", _config(configured_port, accessKeys=[{"name": "me", "key": key}])
    )
    bin_dir = tmp_path / "bin"
    _fake_claude(bin_dir)
    report_file = tmp_path / "report.json"
    env = _cli_env(
        tmp_path,
        f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        FAKE_CLAUDE_REPORT=str(report_file),
        ANTHROPIC_API_KEY="sk-ant-must-not-leak",
        HTTP_PROXY="http://127.0.0.1:9",  # a dead proxy: only NO_PROXY lets the child through
        NO_PROXY="corp.example",
    )
    result = _run_cli(tmp_path, env, "launch", "claude", "--", "-p", "hello there", "--x")
    assert result.returncode == 3, result.stderr
    report = json.loads(report_file.read_text())
    assert report["argv"] == ["-p", "hello there", "--x"]
    seen = report["env"]
    base_url = seen["ANTHROPIC_BASE_URL"]
    assert base_url.startswith("http://127.0.0.1:")
    assert base_url != f"http://127.0.0.1:{configured_port}"  # an embedded gateway on port 0
    assert seen["ANTHROPIC_AUTH_TOKEN"] == key
    assert seen["ANTHROPIC_API_KEY"] is None
    assert seen["NO_PROXY"] == seen["no_proxy"] == "corp.example,localhost,127.0.0.1,::1"
    assert seen["API_TIMEOUT_MS"] == DEFAULT_API_TIMEOUT_MS
    status, health = report["/health"]
    assert status == 200 and health["accessKeyRequired"] is True
    status, models = report["/v1/models"]
    assert status == 200 and "up:gpt-4o" in [m["id"] for m in models["data"]]
    assert _refused(base_url)


@POSIX_ONLY
async def test_running_gateway_is_reused_and_settings_are_overridden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gateway already on the configured address is used and left running, and a settings
    file pointing Claude Code elsewhere is countered with --settings, the file untouched."""
    services = Services(AppPaths.for_root(tmp_path / "dp"), secrets=SecretResolver(environ={}))
    services.config = parse_config(_config(0), "test-config.json")
    server = await services.start_gateway(GatewayOptions(port=0, shutdown_timeout=1.0))
    try:
        launcher = Services(AppPaths.for_root(tmp_path / "dp2"), secrets=SecretResolver(environ={}))
        launcher.config = parse_config(_config(server.port), "test-config.json")
        home = tmp_path / "user-home"
        settings = home / ".claude" / "settings.json"
        settings.parent.mkdir(parents=True)
        original = json.dumps({"env": {"ANTHROPIC_BASE_URL": "http://127.0.0.1:9"}})
        settings.write_text(original)
        bin_dir = tmp_path / "bin"
        _fake_claude(bin_dir)
        report_file = tmp_path / "report.json"
        monkeypatch.setenv("PATH", str(bin_dir))
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.setenv("FAKE_CLAUDE_REPORT", str(report_file))
        monkeypatch.setenv("FAKE_CLAUDE_EXIT", "0")
        monkeypatch.chdir(tmp_path)
        code = await run_claude(launcher, ["-p", "hi"])
        assert code == 0
        assert launcher.gateway is None  # nothing embedded was started
        report = json.loads(report_file.read_text())
        assert report["env"]["ANTHROPIC_BASE_URL"] == server.url
        assert report["argv"][0] == "--settings"
        assert json.loads(report["argv"][1]) == {"env": {"ANTHROPIC_BASE_URL": server.url}}
        assert report["argv"][2:] == ["-p", "hi"]
        assert settings.read_text() == original
        assert await asyncio.to_thread(_health_status, server.url) == 200
    finally:
        await services.stop_gateway()


def test_launch_help_documents_the_double_dash(tmp_path: Path) -> None:
    """`launch claude --help` shows how to pass arguments to claude."""
    env = _cli_env(tmp_path, os.environ.get("PATH", ""))
    result = _run_cli(tmp_path, env, "launch", "claude", "--help")
    assert result.returncode == 0
    assert "[-- ARGS...]" in result.stdout and "--print-env" in result.stdout


INTERRUPTIBLE_CLAUDE = """#!{python}
import os, signal, sys, time

def on_interrupt(signum, frame):
    sys.exit(42)

signal.signal(signal.SIGINT, on_interrupt)
open(os.environ["FAKE_CLAUDE_READY"], "w").close()
time.sleep(30)
sys.exit(1)
"""


@POSIX_ONLY
def test_ctrl_c_belongs_to_the_child(tmp_path: Path) -> None:
    """A terminal Ctrl+C (SIGINT to the process group) is left to claude: the launcher survives
    it, waits, and returns the code claude chose."""
    _write_config(tmp_path / "dp", _config(_free_port()))
    bin_dir = tmp_path / "bin"
    _executable_text(bin_dir / "claude", INTERRUPTIBLE_CLAUDE.format(python=PYTHON))
    ready = tmp_path / "ready"
    env = _cli_env(tmp_path, f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    env["FAKE_CLAUDE_READY"] = str(ready)
    proc = subprocess.Popen(
        [PYTHON, "-m", "desktop_proxy", "launch", "claude"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, like a terminal's foreground job
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), proc.stderr.read() if proc.stderr else ""
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 42, err
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@POSIX_ONLY
def test_unrunnable_claude_exits_126_without_traceback(tmp_path: Path) -> None:
    """A `claude` that cannot be executed (broken interpreter line) is reported in one line, and
    the embedded gateway is still stopped cleanly."""
    _write_config(tmp_path / "dp", _config(_free_port()))
    bin_dir = tmp_path / "bin"
    _executable_text(bin_dir / "claude", "#!/nonexistent/interpreter\n")
    result = _run_cli(tmp_path, _cli_env(tmp_path, str(bin_dir)), "launch", "claude")
    assert result.returncode == 126
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"desktop-proxy: cannot run {bin_dir / 'claude'}")


@pytest.mark.parametrize("before", [True, False], ids=["before-launch", "after-claude"])
def test_config_option_is_honoured_on_either_side(tmp_path: Path, before: bool) -> None:
    """`--config FILE` works before `launch` as well as after `claude`."""
    port = _free_port()
    config_file = tmp_path / "elsewhere.json"
    config_file.write_text(json.dumps(_config(port)))
    option = ["--config", str(config_file)]
    args = [*option, "launch", "claude"] if before else ["launch", "claude", *option]
    env = _cli_env(tmp_path, os.environ.get("PATH", ""))
    result = _run_cli(tmp_path, env, *args, "--print-env")
    assert result.returncode == 0, result.stderr
    assert f"export ANTHROPIC_BASE_URL=http://127.0.0.1:{port}" in result.stdout.splitlines()
