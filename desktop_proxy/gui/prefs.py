"""Preferences that belong to the tray app rather than to the gateway's config.json."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

MAX_RECENT_FOLDERS = 6


@dataclass(slots=True)
class GuiPrefs:
    start_gateway_on_launch: bool = True
    recent_folders: list[str] = field(default_factory=list)
    # The user accepted, once, that keys may be written into config.json (no keyring here).
    allow_plaintext_keys: bool = False

    def remember_folder(self, folder: Path) -> None:
        text = str(folder)
        self.recent_folders = [text, *(f for f in self.recent_folders if f != text)][
            :MAX_RECENT_FOLDERS
        ]


def prefs_path(config_dir: Path) -> Path:
    return config_dir / "gui.json"


def load_prefs(path: Path) -> GuiPrefs:
    """Read the preferences; a missing or damaged file gives the defaults (never an error)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return GuiPrefs()
    if not isinstance(data, dict):
        return GuiPrefs()
    prefs = GuiPrefs()
    if isinstance(data.get("startGatewayOnLaunch"), bool):
        prefs.start_gateway_on_launch = data["startGatewayOnLaunch"]
    folders = data.get("recentFolders")
    if isinstance(folders, list):
        prefs.recent_folders = [f for f in folders if isinstance(f, str)][:MAX_RECENT_FOLDERS]
    if isinstance(data.get("allowPlaintextKeys"), bool):
        prefs.allow_plaintext_keys = data["allowPlaintextKeys"]
    return prefs


def save_prefs(prefs: GuiPrefs, path: Path) -> None:
    data = asdict(prefs)
    out = {
        "startGatewayOnLaunch": data["start_gateway_on_launch"],
        "recentFolders": data["recent_folders"],
        "allowPlaintextKeys": data["allow_plaintext_keys"],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".gui.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
