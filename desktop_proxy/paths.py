"""Where config, data and logs live.

platformdirs picks the per-OS locations; `DESKTOP_PROXY_HOME=DIR` relocates all of them under
DIR (portable mode, and how tests stay away from the user's real files).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP_NAME = "desktop-proxy"
APP_AUTHOR = "desktop-proxy"
HOME_ENV = "DESKTOP_PROXY_HOME"


@dataclass(frozen=True, slots=True)
class AppPaths:
    config_dir: Path
    data_dir: Path
    log_dir: Path

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.json"

    @property
    def history_db(self) -> Path:
        return self.data_dir / "history.sqlite3"

    @property
    def log_file(self) -> Path:
        return self.log_dir / "desktop-proxy.log"

    @classmethod
    def for_root(cls, root: Path) -> AppPaths:
        return cls(config_dir=root / "config", data_dir=root / "data", log_dir=root / "logs")

    @classmethod
    def from_environment(cls) -> AppPaths:
        home = os.environ.get(HOME_ENV)
        if home:
            return cls.for_root(Path(home).expanduser())
        dirs = platformdirs.PlatformDirs(APP_NAME, APP_AUTHOR)
        return cls(
            config_dir=Path(dirs.user_config_dir),
            data_dir=Path(dirs.user_data_dir),
            log_dir=Path(dirs.user_log_dir),
        )
