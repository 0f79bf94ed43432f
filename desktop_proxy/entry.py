"""`desktop-proxy` entry point: the tray app with no command, headless commands otherwise."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["_history-writer"]:  # the history writer's own process (history/remote.py)
        from desktop_proxy.history import worker

        return worker.main()
    from desktop_proxy import cli

    wants_gui = not args or (args[0] == "--config" and len(args) == 2)
    if not wants_gui:
        return cli.main(args)
    try:
        # Qt is imported only here, so headless commands never load it.
        gui_app = importlib.import_module("desktop_proxy.gui.app")
    except ImportError as exc:
        print(
            f"desktop-proxy: the tray app is not available ({exc}); running headless.",
            file=sys.stderr,
            flush=True,
        )
        return cli.main(["serve", *args])
    run: Callable[[list[str]], int] = gui_app.run
    return run(args)
