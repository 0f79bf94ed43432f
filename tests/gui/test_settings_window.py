"""Settings round trips: edits, validation, config.json with keyring refs, keyring secrets."""

from __future__ import annotations

import json
from pathlib import Path

import keyring
import pytest
from PySide6.QtGui import QGuiApplication

from desktop_proxy.config.loader import load_config
from desktop_proxy.gui.bridge import GatewayBridge
from desktop_proxy.gui.facade import ServicesFacade
from desktop_proxy.gui.prefs import GuiPrefs
from desktop_proxy.gui.settings_logic import keyring_entry_name, split_problem, validate
from desktop_proxy.gui.settings_window import SettingsHooks, SettingsWindow
from desktop_proxy.gui.tasks import InlineRunner
from desktop_proxy.paths import AppPaths
from desktop_proxy.services import Services
from tests.gui.fakes import FakeFacade
from tests.memory_keyring import MemoryKeyring

pytestmark = pytest.mark.gui

SECRET = "sk-test-0123456789abcdefSECRET"


class Hooks:
    def __init__(self) -> None:
        self.prefs = GuiPrefs()
        self.saved: list[GuiPrefs] = []
        self.autostart = False

    def make(self) -> SettingsHooks:
        return SettingsHooks(
            prefs=self.prefs,
            save_prefs=self.saved.append,
            autostart_enabled=lambda: self.autostart,
            set_autostart=lambda on: setattr(self, "autostart", on),
        )


@pytest.fixture
def real(qapp: object, tmp_path: Path) -> tuple[ServicesFacade, GatewayBridge, InlineRunner]:
    services = Services(AppPaths.for_root(tmp_path / "home"))
    services.load_config()
    facade = ServicesFacade(services)
    runner = InlineRunner()
    return facade, GatewayBridge(facade, runner), runner


def window_for(bridge: GatewayBridge, qtbot: object, hooks: Hooks | None = None) -> SettingsWindow:
    window = SettingsWindow(bridge, (hooks or Hooks()).make())
    qtbot.addWidget(window)  # type: ignore[attr-defined]
    return window


def test_new_provider_key_goes_to_the_keyring_not_the_file(
    real: tuple[ServicesFacade, GatewayBridge, InlineRunner],
    qtbot: object,
    memory_keyring: MemoryKeyring,
) -> None:
    """Add OpenAI from its preset, paste a key, Apply: the file has a keyring: reference."""
    facade, bridge, runner = real
    window = window_for(bridge, qtbot)
    window.add_provider("openai")
    assert window.p_name.text() == "openai"
    window.ask_key = lambda provider: ("keyring", SECRET)
    window.add_key()
    assert "to be saved in the OS keyring" in window.p_keys.item(0).text()
    assert SECRET not in window.p_keys.item(0).text()
    assert window.apply_button.isEnabled(), window.problems
    window.apply()
    assert runner.errors == []
    text = facade.config_path.read_text()
    assert SECRET not in text
    saved = json.loads(text)
    openai = next(p for p in saved["providers"] if p["name"] == "openai")
    assert openai["apiKeys"] == ["keyring:provider-openai"]
    assert memory_keyring.passwords[("desktop-proxy", "provider-openai")] == SECRET
    assert facade.config.provider("openai") is not None
    assert window.status_label.text() == "Saved and applied."
    assert window.p_keys.item(0).text() == "Stored in the OS keyring as 'provider-openai'"


def test_removing_a_key_deletes_its_keyring_entry(
    real: tuple[ServicesFacade, GatewayBridge, InlineRunner],
    qtbot: object,
    memory_keyring: MemoryKeyring,
) -> None:
    facade, bridge, _runner = real
    window = window_for(bridge, qtbot)
    window.add_provider("groq")
    window.ask_key = lambda provider: ("keyring", SECRET)
    window.add_key()
    window.apply()
    assert ("desktop-proxy", "provider-groq") in memory_keyring.passwords
    window.p_keys.setCurrentRow(0)
    window.remove_key()
    window.apply()
    assert ("desktop-proxy", "provider-groq") not in memory_keyring.passwords
    assert load_config(facade.config_path).provider("groq").api_keys == []  # type: ignore[union-attr]


def test_env_reference_is_written_as_is(
    real: tuple[ServicesFacade, GatewayBridge, InlineRunner], qtbot: object
) -> None:
    facade, bridge, _runner = real
    window = window_for(bridge, qtbot)
    window.add_provider("mistral")
    window.ask_key = lambda provider: ("env", "MY_MISTRAL_KEY")
    window.add_key()
    window.apply()
    assert load_config(facade.config_path).provider("mistral").api_keys == [  # type: ignore[union-attr]
        "env:MY_MISTRAL_KEY"
    ]


def test_validation_uses_the_loader_messages(bridge: GatewayBridge, qtbot: object) -> None:
    """A bad base URL shows the config validator's message next to the provider form."""
    window = window_for(bridge, qtbot)
    window.show()
    window.p_url.setText("ftp://nope")
    window.p_url.textEdited.emit("ftp://nope")
    assert window.problems[0].path == "providers[0].baseUrl"
    assert window.provider_error.text() == "must be an http(s) URL, got 'ftp://nope'"
    assert not window.provider_error.isHidden()
    assert not window.apply_button.isEnabled()
    assert window.provider_list.item(0).text().startswith("⚠ ")
    window.p_url.setText("http://127.0.0.1:11434/v1")
    window.p_url.textEdited.emit("http://127.0.0.1:11434/v1")
    assert window.problems == []
    assert window.apply_button.isEnabled()
    assert window.provider_error.isHidden()


def test_alias_to_an_unknown_model_is_flagged(bridge: GatewayBridge, qtbot: object) -> None:
    window = window_for(bridge, qtbot)
    window.add_alias()
    window.alias_table.item(0, 0).setText("fast")
    window.alias_table.item(0, 1).setText("nowhere:model")
    assert any(p.path == "aliases.fast" for p in window.problems)
    assert "aliases.fast: refers to unknown provider 'nowhere'" in window.alias_error.text()
    window.alias_table.item(0, 1).setText("ollama:llama3")
    assert window.problems == []


def test_tier_pickers_offer_known_models(
    bridge: GatewayBridge, facade: FakeFacade, qtbot: object
) -> None:
    facade.config.providers[0].models = ["llama3:8b", "qwen2.5"]
    facade.config.aliases = {"local": "ollama:llama3:8b"}
    window = window_for(bridge, qtbot)
    box = window.tier_boxes["small"]
    items = [box.itemText(i) for i in range(box.count())]
    assert items == ["(not set)", "local", "ollama:llama3:8b", "ollama:qwen2.5"]
    box.setCurrentText("ollama:qwen2.5")
    window.apply()
    assert facade.config.tiers.small == "ollama:qwen2.5"


def test_access_keys_generate_copy_revoke(
    bridge: GatewayBridge, facade: FakeFacade, qtbot: object, memory_keyring: MemoryKeyring
) -> None:
    window = window_for(bridge, qtbot)
    assert "needs no access key" in window.keys_note.text()
    window.generate_key()
    value = QGuiApplication.clipboard().text()
    assert value.startswith("dp-")
    assert window.draft.access_keys[0].key == "keyring:access-default"
    assert "requires one of these keys" in window.keys_note.text()
    window.apply()
    assert memory_keyring.passwords[("desktop-proxy", "access-default")] == value
    assert value not in facade.config_path.read_text()
    QGuiApplication.clipboard().setText("")
    window.key_table.selectRow(0)
    window.copy_key()
    assert QGuiApplication.clipboard().text() == value
    window.revoke_key()
    window.apply()
    assert facade.config.access_keys == []
    assert facade.applied[-1][2] == ["access-default"]


def test_server_tab_port_and_prefs(
    bridge: GatewayBridge, facade: FakeFacade, qtbot: object
) -> None:
    hooks = Hooks()
    window = window_for(bridge, qtbot, hooks)
    window.port_spin.setValue(7000)
    window.start_on_launch.setChecked(False)
    window.start_at_login.setChecked(True)
    window.retention_spin.setValue(30)
    window.store_bodies.setChecked(False)
    window.apply()
    saved = json.loads(facade.config_path.read_text())
    assert saved["server"]["port"] == 7000
    assert saved["history"]["retentionDays"] == 30
    assert saved["history"]["storeBodies"] is False
    assert hooks.saved and hooks.saved[-1].start_gateway_on_launch is False
    assert hooks.autostart is True


def test_network_host_without_keys_is_explained(bridge: GatewayBridge, qtbot: object) -> None:
    window = window_for(bridge, qtbot)
    window.host_edit.setText("0.0.0.0")
    window.host_edit.textEdited.emit("0.0.0.0")
    assert "reachable from your network" in window.keys_note.text()


def test_fetch_models_adds_unticked_candidates(
    bridge: GatewayBridge, facade: FakeFacade, qtbot: object
) -> None:
    window = window_for(bridge, qtbot)
    window.fetch_models()
    names = [window.p_models.item(i).text() for i in range(window.p_models.count())]
    assert names == ["m1", "m2"]
    assert window.draft.providers[0].models == []
    window.p_models.item(1).setCheckState(window.p_models.item(1).checkState().Checked)
    assert window.draft.providers[0].models == ["m2"]
    window.test_connection()
    assert window.test_result.text().startswith("✓ Connected")


def test_renaming_a_provider_carries_aliases(
    bridge: GatewayBridge, facade: FakeFacade, qtbot: object
) -> None:
    facade.config.providers[0].models = ["llama3"]
    facade.config.aliases = {"local": "ollama:llama3"}
    window = window_for(bridge, qtbot)
    window.p_name.setText("home")
    window.p_name.textEdited.emit("home")
    assert window.draft.aliases == {"local": "home:llama3"}
    assert window.problems == []


def test_pure_helpers() -> None:
    assert keyring_entry_name("provider", "open ai", ["provider-open-ai"]) == "provider-open-ai-2"
    problem = split_problem("providers[2].baseUrl: must be an http(s) URL, got 'x'")
    assert (problem.section, problem.index, problem.field) == ("providers", 2, "baseUrl")
    from desktop_proxy.config.loader import default_config

    assert validate(default_config()) == []
    assert keyring.get_password("desktop-proxy", "nothing") is None
