"""Run Claude Code against the gateway with a process-scoped environment.

Nothing here edits Claude Code's settings files: the child process gets an environment that
points it at the gateway, and the user's shell and files stay as they were. When no gateway is
listening on the configured address, an embedded one runs for the child's lifetime.

OS-specific choices are small pure functions (`windows=` flags) so they are tested on any OS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import aiohttp

from desktop_proxy.config.loader import first_run_message
from desktop_proxy.config.models import AppConfig
from desktop_proxy.server.runner import format_url
from desktop_proxy.services import GatewayOptions, Services

CLAUDE_INSTALL_HINT = "npm install -g @anthropic-ai/claude-code"
# Sent when the gateway needs no access key: with no credential at all, Claude Code asks the
# user to log in to Anthropic instead of calling ANTHROPIC_BASE_URL.
PLACEHOLDER_TOKEN = "desktop-proxy"
# Slow and local upstreams can take minutes for a long answer (Claude Code's default is shorter).
DEFAULT_API_TIMEOUT_MS = "600000"
LOOPBACK_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
# The embedded gateway only serves the child on this machine.
EMBEDDED_HOST = "127.0.0.1"
HEALTH_TIMEOUT = 1.5
EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126
EXIT_ERROR = 1

# Variables that make Claude Code talk to somewhere other than the gateway.
OVERRIDING_SETTINGS_ENV: tuple[str, ...] = (
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
)

ShellStyle = Literal["posix", "powershell", "cmd"]


@dataclass(frozen=True, slots=True)
class ClaudeModels:
    """Optional model names for Claude Code's tiers (`ANTHROPIC_DEFAULT_*_MODEL`).

    Unset by default: the gateway maps `*opus*`/`*sonnet*`/`*haiku*` names to its tiers itself.
    """

    opus: str | None = None
    sonnet: str | None = None
    haiku: str | None = None

    def env(self) -> dict[str, str]:
        pairs = {
            "ANTHROPIC_DEFAULT_OPUS_MODEL": self.opus,
            "ANTHROPIC_DEFAULT_SONNET_MODEL": self.sonnet,
            "ANTHROPIC_DEFAULT_HAIKU_MODEL": self.haiku,
        }
        return {name: value for name, value in pairs.items() if value}


# --- the environment ---------------------------------------------------------------------------


def is_windows() -> bool:
    return sys.platform == "win32"


def _names(env: Mapping[str, str], name: str, *, windows: bool) -> list[str]:
    """The keys of `env` that mean variable `name` (any letter case on Windows)."""
    if windows:
        return [key for key in env if key.upper() == name.upper()]
    return [name] if name in env else []


def merge_no_proxy(*values: str | None, hosts: Sequence[str] = LOOPBACK_HOSTS) -> str:
    """Comma-separated union of existing NO_PROXY values and `hosts`, first spelling kept."""
    seen: set[str] = set()
    merged: list[str] = []
    for value in values:
        for entry in (value or "").split(","):
            item = entry.strip()
            if item and item.lower() not in seen:
                seen.add(item.lower())
                merged.append(item)
    for host in hosts:
        if host.lower() not in seen:
            seen.add(host.lower())
            merged.append(host)
    return ",".join(merged)


def claude_env(
    base_url: str,
    access_key: str | None,
    *,
    base_env: Mapping[str, str],
    tiers: ClaudeModels | None = None,
    max_output_tokens: int | None = None,
    windows: bool | None = None,
) -> dict[str, str]:
    """The child's environment: `base_env` pointed at the gateway at `base_url`.

    The access key (or a placeholder for an open gateway) goes in ANTHROPIC_AUTH_TOKEN and
    ANTHROPIC_API_KEY is removed, since Claude Code would prefer it over the token. Loopback is
    merged into NO_PROXY/no_proxy so an HTTP(S)_PROXY does not capture the gateway's traffic.
    On Windows, where variable names ignore case, one spelling of each name is kept.
    """
    win = is_windows() if windows is None else windows
    env = dict(base_env)
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN"):
        for key in _names(env, name, windows=win):
            del env[key]
    env["ANTHROPIC_BASE_URL"] = base_url
    env["ANTHROPIC_AUTH_TOKEN"] = access_key or PLACEHOLDER_TOKEN

    proxy_names = ["NO_PROXY"] if win else ["NO_PROXY", "no_proxy"]
    existing_keys = [k for n in ("NO_PROXY", "no_proxy") for k in _names(env, n, windows=win)]
    existing = [env.pop(k) for k in dict.fromkeys(existing_keys)]
    no_proxy = merge_no_proxy(*existing)
    for name in proxy_names:
        env[name] = no_proxy

    if not _names(env, "API_TIMEOUT_MS", windows=win):
        env["API_TIMEOUT_MS"] = DEFAULT_API_TIMEOUT_MS
    if tiers is not None:
        for name, value in tiers.env().items():
            for key in _names(env, name, windows=win):
                del env[key]
            env[name] = value
    if max_output_tokens is not None:
        for key in _names(env, "CLAUDE_CODE_MAX_OUTPUT_TOKENS", windows=win):
            del env[key]
        env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] = str(max_output_tokens)
    return env


def env_changes(
    before: Mapping[str, str], after: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    """What `after` sets (new or changed values) and unsets, relative to `before`."""
    changed = {k: v for k, v in after.items() if before.get(k) != v}
    removed = [k for k in before if k not in after]
    return changed, removed


def _powershell_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def format_env(
    assignments: Mapping[str, str], unset: Sequence[str] = (), *, style: ShellStyle = "posix"
) -> str:
    """Lines a user can paste into a shell of `style` to get the same environment."""
    lines: list[str] = []
    if style == "posix":
        lines += [f"unset {name}" for name in unset]
        lines += [f"export {k}={shlex.quote(v)}" for k, v in assignments.items()]
    elif style == "powershell":
        lines += [f"Remove-Item Env:{name} -ErrorAction SilentlyContinue" for name in unset]
        lines += [f"$env:{k} = {_powershell_quote(v)}" for k, v in assignments.items()]
    else:  # cmd.exe: the quotes around name=value keep trailing spaces and & out of the value
        lines += [f'set "{name}="' for name in unset]
        lines += [f'set "{k}={v}"' for k, v in assignments.items()]
    return "\n".join(lines)


def default_shell_style(env: Mapping[str, str], *, windows: bool | None = None) -> ShellStyle:
    """POSIX syntax, except PowerShell on Windows outside a POSIX shell (Git Bash, MSYS, Cygwin).

    cmd.exe cannot be told apart from PowerShell by its environment, so it needs `--shell cmd`.
    """
    win = is_windows() if windows is None else windows
    if not win or env.get("SHELL") or env.get("MSYSTEM"):
        return "posix"
    return "powershell"


# --- finding the binary --------------------------------------------------------------------------


def home_dir(env: Mapping[str, str], *, windows: bool | None = None) -> Path:
    win = is_windows() if windows is None else windows
    home = env.get("USERPROFILE") if win else env.get("HOME")
    return Path(home) if home else Path.home()


def claude_candidates(env: Mapping[str, str], *, windows: bool | None = None) -> list[Path]:
    """Where Claude Code's installers put `claude` when it is not on PATH, most likely first."""
    win = is_windows() if windows is None else windows
    home = home_dir(env, windows=win)
    prefixes = [env.get(n) for n in ("NPM_CONFIG_PREFIX", "npm_config_prefix")]
    npm_prefixes = [Path(p) for p in prefixes if p]
    if win:
        appdata = env.get("APPDATA")
        if appdata:
            npm_prefixes.append(Path(appdata) / "npm")
        return [
            home / ".local" / "bin" / "claude.exe",  # the native installer
            home / ".claude" / "local" / "claude.exe",
            *(p / name for p in npm_prefixes for name in ("claude.cmd", "claude.exe")),
        ]
    npm_prefixes += [home / ".npm-global", home / ".local", Path("/usr/local")]
    return [
        home / ".local" / "bin" / "claude",  # the native installer
        home / ".claude" / "local" / "claude",  # `claude migrate-installer`
        *(p / "bin" / "claude" for p in npm_prefixes),
        Path("/opt/homebrew/bin/claude"),
    ]


def _is_executable(path: Path, *, windows: bool) -> bool:
    if not path.is_file():
        return False
    return windows or os.access(path, os.X_OK)


def find_claude(env: Mapping[str, str], *, windows: bool | None = None) -> Path | None:
    """`claude` on the PATH of `env`, else in a usual install location, else None."""
    win = is_windows() if windows is None else windows
    path_keys = _names(env, "PATH", windows=win)
    search_path = env[path_keys[0]] if path_keys else ""
    found = shutil.which("claude", path=search_path) if search_path else None
    if found:
        return Path(found)
    for candidate in claude_candidates(env, windows=win):
        if _is_executable(candidate, windows=win):
            return candidate
    return None


def missing_claude_message() -> str:
    return (
        "desktop-proxy: Claude Code (`claude`) was not found on PATH. "
        f"Install it with: {CLAUDE_INSTALL_HINT}"
    )


# --- settings that would win over the environment --------------------------------------------


def claude_settings_files(
    env: Mapping[str, str], cwd: Path, *, windows: bool | None = None
) -> list[Path]:
    """Claude Code's user, project and local settings files (they may not exist)."""
    config_dir = env.get("CLAUDE_CONFIG_DIR")
    user_dir = Path(config_dir) if config_dir else home_dir(env, windows=windows) / ".claude"
    return [
        user_dir / "settings.json",
        cwd / ".claude" / "settings.json",
        cwd / ".claude" / "settings.local.json",
    ]


def settings_overrides(settings: Mapping[str, Any]) -> list[str]:
    """Settings keys that make Claude Code ignore the gateway's environment (read-only check)."""
    found: list[str] = []
    env = settings.get("env")
    if isinstance(env, Mapping):
        found += [f"env.{name}" for name in OVERRIDING_SETTINGS_ENV if env.get(name)]
    if settings.get("apiKeyHelper"):
        found.append("apiKeyHelper")
    return found


def read_settings_overrides(files: Sequence[Path]) -> dict[Path, list[str]]:
    """Settings files whose keys would override the gateway (unreadable files are skipped)."""
    found: dict[Path, list[str]] = {}
    for path in files:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and (keys := settings_overrides(data)):
            found[path] = keys
    return found


def has_settings_flag(args: Sequence[str]) -> bool:
    return any(a == "--settings" or a.startswith("--settings=") for a in args)


def settings_override_args(overridden: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """`--settings JSON` that restores the gateway's values over settings-file `env.*` keys.

    Command-line settings take precedence over the user's and project's settings files, so
    this wins for one session without editing any file. An API key is replaced by "" (unset),
    which lets ANTHROPIC_AUTH_TOKEN through. Empty when nothing needs overriding.
    """
    values = {
        "ANTHROPIC_BASE_URL": env.get("ANTHROPIC_BASE_URL", ""),
        "ANTHROPIC_AUTH_TOKEN": env.get("ANTHROPIC_AUTH_TOKEN", ""),
        "ANTHROPIC_API_KEY": "",
    }
    names = [key.removeprefix("env.") for key in overridden if key.startswith("env.")]
    wanted = {name: values[name] for name in OVERRIDING_SETTINGS_ENV if name in names}
    if not wanted:
        return []
    return ["--settings", json.dumps({"env": wanted}, separators=(",", ":"))]


def settings_messages(found: Mapping[Path, Sequence[str]], *, overridden: bool) -> list[str]:
    """What to tell the user about settings files that point Claude Code elsewhere."""
    lines: list[str] = []
    for path, keys in found.items():
        env_keys = [k for k in keys if k.startswith("env.")]
        if env_keys and overridden:
            lines.append(
                f"desktop-proxy: note: {path} sets {', '.join(env_keys)}; this session "
                "overrides them with --settings (the file is not edited)."
            )
        elif env_keys:
            lines.append(
                f"desktop-proxy: warning: {path} sets {', '.join(env_keys)}, which Claude Code "
                "applies over the environment, and you passed your own --settings: requests "
                "may not reach the gateway. The file is not edited."
            )
        if "apiKeyHelper" in keys:
            lines.append(
                f"desktop-proxy: warning: {path} sets apiKeyHelper; Claude Code may send that "
                "helper's key instead of the gateway's access key. The file is not edited."
            )
    return lines


# --- exit codes ----------------------------------------------------------------------------------


def exit_code(returncode: int) -> int:
    """A child's return code as a shell would report it (killed by signal N → 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


# --- the gateway ---------------------------------------------------------------------------------


def is_gateway_health(data: object) -> bool:
    """Whether a /health JSON body is desktop-proxy's (not some other server on the port)."""
    return (
        isinstance(data, dict)
        and data.get("status") in ("ok", "degraded")
        and isinstance(data.get("version"), str)
        and isinstance(data.get("accessKeyRequired"), bool)
        and isinstance(data.get("providers"), list)
    )


async def probe_gateway(url: str, wait: float = HEALTH_TIMEOUT) -> dict[str, Any] | None:
    """The /health JSON of a desktop-proxy gateway at `url`, or None if there is none."""
    client_timeout = aiohttp.ClientTimeout(total=wait)
    try:
        # trust_env=False: the probe must not go through an HTTP proxy either.
        async with (
            aiohttp.ClientSession(timeout=client_timeout, trust_env=False) as session,
            session.get(f"{url}/health") as resp,
        ):
            if resp.status != 200:
                return None
            data = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError, OSError):
        return None
    return data if is_gateway_health(data) else None


def configured_url(config: AppConfig) -> str:
    return format_url(config.server.host, config.server.port)


@contextlib.contextmanager
def _child_owns_interrupts(
    loop: asyncio.AbstractEventLoop, proc: asyncio.subprocess.Process
) -> Iterator[None]:
    """While the child runs, Ctrl+C belongs to it (Claude Code uses it to cancel a turn), and a
    SIGTERM/SIGHUP to us is passed on to it so the embedded gateway outlives it."""
    if is_windows():
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
        return

    def forward(sig: int) -> None:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)

    def ignore() -> None:
        pass  # the terminal sent SIGINT to the child as well; it decides what Ctrl+C means

    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        handler = ignore if sig == signal.SIGINT else partial(forward, sig)
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, handler)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def _run_child(binary: Path, args: Sequence[str], env: Mapping[str, str]) -> int:
    try:
        proc = await asyncio.create_subprocess_exec(str(binary), *args, env=dict(env))
    except OSError as exc:  # found but not runnable: a broken install, a wrong architecture, ...
        _err(
            f"desktop-proxy: cannot run {binary}: {exc.strerror or exc}. "
            f"Reinstall Claude Code with: {CLAUDE_INSTALL_HINT}"
        )
        return EXIT_NOT_EXECUTABLE
    with _child_owns_interrupts(asyncio.get_running_loop(), proc):
        try:
            returncode = await proc.wait()
        except asyncio.CancelledError:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
                await proc.wait()
            raise
    return exit_code(returncode)


async def _access_key(services: Services, config: AppConfig) -> str | None:
    keys = await services.resolve_access_keys(config)
    return keys[0].value if keys else None


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def run_claude(
    services: Services,
    args: list[str],
    *,
    print_env: bool = False,
    shell: ShellStyle | None = None,
) -> int:
    """Run `claude ARGS...` against the gateway and return its exit code.

    Uses the gateway already listening on the configured address, or starts an embedded one
    on a free loopback port until the child exits. With `print_env`, prints the environment
    for the configured address instead (in `shell` syntax, default: this OS's) and returns 0.
    A missing `claude` binary returns 127 after a one-line hint.
    """
    config = services.config or services.load_config()
    if services.created_config:
        _err(first_run_message(services.config_path))
    access_key = await _access_key(services, config)
    url = configured_url(config)
    running = await probe_gateway(url)
    base_env = os.environ

    if print_env:
        env = claude_env(url, access_key, base_env=base_env)
        changed, removed = env_changes(base_env, env)
        style = shell or default_shell_style(base_env)
        print(format_env(changed, removed, style=style), flush=True)
        if running is None:
            _err(
                f"desktop-proxy: no gateway is running at {url} yet; start one with "
                "`desktop-proxy serve` (or the tray app) before running claude."
            )
        return 0

    binary = find_claude(base_env)
    if binary is None:
        _err(missing_claude_message())
        return EXIT_NOT_FOUND
    found = read_settings_overrides(claude_settings_files(base_env, Path.cwd()))
    override = not has_settings_flag(args)

    embedded = running is None
    if running is not None and running.get("accessKeyRequired") and access_key is None:
        _err(
            f"desktop-proxy: warning: the gateway at {url} requires an access key, but this "
            "config has none (accessKeys); Claude Code's requests will be refused."
        )
    if embedded:
        server = await services.start_gateway(GatewayOptions(host=EMBEDDED_HOST, port=0))
        url = server.url
    try:
        env = claude_env(url, access_key, base_env=base_env)
        overriding = [key for file_keys in found.values() for key in file_keys]
        extra = settings_override_args(overriding, env) if override else []
        for line in settings_messages(found, overridden=bool(extra)):
            _err(line)
        return await _run_child(binary, [*extra, *args], env)
    finally:
        if embedded:
            await services.stop_gateway()
