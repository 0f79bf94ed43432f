"""desktop_proxy: a local LLM API gateway that lives in the system tray."""

from desktop_proxy._version import __version__

__all__ = ["__version__"]
