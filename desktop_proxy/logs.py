"""Logging: a rotating file in the user log dir, plus stderr for `serve`."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_logging(log_file: Path | None, level: str = "INFO", *, stderr: bool = True) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(level.upper())
    formatter = logging.Formatter(FORMAT)
    # A windowed Windows build has no stderr at all.
    if stderr and sys.stderr is not None:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(formatter)
        root.addHandler(console)
    if log_file is not None:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            file_handler = logging.handlers.RotatingFileHandler(
                log_file, maxBytes=5 * 1024 * 1024, backupCount=5, encoding="utf-8"
            )
        except OSError as exc:
            logging.getLogger(__name__).warning(
                "cannot write the log file %s (%s); logging to stderr only", log_file, exc
            )
        else:
            file_handler.setFormatter(formatter)
            root.addHandler(file_handler)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
