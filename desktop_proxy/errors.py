"""Exceptions whose message is meant for the user; none should surface as a traceback."""

from __future__ import annotations


class DesktopProxyError(Exception):
    """Base for errors whose message is shown to the user as is."""


class ConfigError(DesktopProxyError):
    """The configuration file is missing, unreadable or invalid.

    `problems` lists each issue as "key.path: what is wrong".
    """

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"Invalid configuration in {path}:\n{lines}")


class SecretError(DesktopProxyError):
    """A secret reference could not be resolved (missing env var, no keyring backend, ...)."""


class PortInUseError(DesktopProxyError):
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        super().__init__(
            f"Port {port} on {host} is already in use. Another desktop-proxy may be running; "
            f"stop it, or choose another port with --port (e.g. --port {port + 1}, or --port 0 "
            "for any free port)."
        )


class InsecureBindError(DesktopProxyError):
    pass
