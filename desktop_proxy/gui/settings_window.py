"""The settings window: Server, Providers, Aliases & tiers, Access keys, Routing.

Edits go into a copy of the configuration (`draft`); every edit re-runs the config loader's
own validation, and its messages appear next to the fields they name. Apply stores new keys in
the OS keyring, saves config.json atomically with `keyring:` references, and reloads the
gateway (only a host or port change restarts the listener).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QCloseEvent, QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QMessageBox,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from desktop_proxy.config.loader import STRATEGIES
from desktop_proxy.config.models import AccessKey, AppConfig, ProviderConfig
from desktop_proxy.config.presets import PRESETS, get_preset
from desktop_proxy.config.secrets import KEYRING_PREFIX, KeyringStatus, parse_ref
from desktop_proxy.gui.bridge import GatewayBridge
from desktop_proxy.gui.facade import ApplyResult, ConnectionResult
from desktop_proxy.gui.prefs import GuiPrefs
from desktop_proxy.gui.settings_logic import (
    Problem,
    describe_key,
    keyring_entries,
    keyring_entry_name,
    known_model_refs,
    loopback_note,
    problems_for,
    provider_from_preset,
    validate,
)
from desktop_proxy.services import generate_access_key

ERROR_STYLE = "color: #c62828;"
OK_STYLE = "color: #2e7d32;"
NOT_SET = "(not set)"

STRATEGY_HELP = {
    "failover": "Use providers in the order listed; move on when one fails.",
    "round-robin": "Take turns between the providers that serve a model.",
    "weighted": "Share requests between providers in proportion to their weight.",
    "random": "Pick a provider at random for each request.",
}


@dataclass
class SettingsHooks:
    """The app-level settings that do not live in config.json."""

    prefs: GuiPrefs
    save_prefs: Callable[[GuiPrefs], None]
    autostart_enabled: Callable[[], bool]
    set_autostart: Callable[[bool], None]


def provider_label(p: ProviderConfig) -> str:
    preset = get_preset(p.kind)
    kind = preset.label if preset else p.kind
    label = p.name if kind.lower().startswith(p.name.lower()) else f"{p.name} — {kind}"
    return label if p.enabled else f"{label} (disabled)"


def error_label() -> QLabel:
    label = QLabel("")
    label.setStyleSheet(ERROR_STYLE)
    label.setWordWrap(True)
    label.setVisible(False)
    return label


def show_problems(label: QLabel, problems: list[Problem], *, with_path: bool = False) -> None:
    label.setText("\n".join(p.text if with_path else p.message for p in problems))
    label.setVisible(bool(problems))


class KeyDialog(QDialog):
    """Ask for an API key and where to keep it."""

    def __init__(self, provider: str, keyring: KeyringStatus | None, parent: QWidget | None):
        super().__init__(parent)
        self.setWindowTitle(f"Add a key for {provider}")
        self.keyring_ok = keyring is None or keyring.available
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.value = QLineEdit()
        self.value.setEchoMode(QLineEdit.EchoMode.Password)
        self.value.setPlaceholderText("Paste the API key")
        self.value.setMinimumWidth(360)
        form.addRow("API key:", self.value)
        layout.addLayout(form)
        self.use_keyring = QRadioButton("Store it in the OS keyring (recommended)")
        self.use_env = QRadioButton("Read it from an environment variable:")
        self.env_name = QLineEdit()
        self.env_name.setPlaceholderText("OPENAI_API_KEY")
        self.use_plain = QRadioButton("Write it into config.json as plain text")
        self.plain_ok = QCheckBox("I understand that anyone who can read config.json can use it")
        self.plain_ok.setEnabled(False)
        env_row = QHBoxLayout()
        env_row.addWidget(self.use_env)
        env_row.addWidget(self.env_name, 1)
        layout.addWidget(self.use_keyring)
        layout.addLayout(env_row)
        layout.addWidget(self.use_plain)
        layout.addWidget(self.plain_ok)
        if keyring is not None and not keyring.available:
            note = QLabel(keyring.message)
            note.setWordWrap(True)
            note.setStyleSheet(ERROR_STYLE)
            layout.addWidget(note)
        self.use_keyring.setEnabled(self.keyring_ok)
        self.use_plain.setVisible(not self.keyring_ok)
        self.plain_ok.setVisible(not self.keyring_ok)
        (self.use_keyring if self.keyring_ok else self.use_env).setChecked(True)
        self.use_plain.toggled.connect(self.plain_ok.setEnabled)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self._accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def _accept(self) -> None:
        if self.use_env.isChecked():
            if self.env_name.text().strip():
                self.accept()
            return
        if not self.value.text().strip():
            return
        if self.use_plain.isChecked() and not self.plain_ok.isChecked():
            return
        self.accept()

    def result_choice(self) -> tuple[str, str]:
        """('keyring' | 'env' | 'plain', value or variable name)."""
        if self.use_env.isChecked():
            return "env", self.env_name.text().strip()
        if self.use_plain.isChecked():
            return "plain", self.value.text().strip()
        return "keyring", self.value.text().strip()


class SettingsWindow(QDialog):
    applied = Signal(object)  # ApplyResult

    def __init__(
        self,
        bridge: GatewayBridge,
        hooks: SettingsHooks,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.hooks = hooks
        self.setWindowTitle("Settings — Desktop Proxy")
        self.setWindowFlag(Qt.WindowType.WindowContextHelpButtonHint, False)
        self.resize(860, 600)
        self.keyring: KeyringStatus | None = None
        # Tests replace this to answer the key dialog without showing it.
        self.ask_key: Callable[[str], tuple[str, str] | None] = self._ask_key
        self._loading = False
        self._build()
        self.reset()

    # --- state ------------------------------------------------------------------------------

    def reset(self) -> None:
        """Start over from the configuration in force."""
        self.draft: AppConfig = copy.deepcopy(self.bridge.facade.config)
        self.pending_secrets: dict[str, str] = {}
        self.forget: list[str] = []
        self.problems: list[Problem] = []
        self.autostart = self.hooks.autostart_enabled()
        self._load_all()
        self.bridge.runner.run(self.bridge.facade.keyring_status(), self._keyring_loaded)

    def _keyring_loaded(self, status: KeyringStatus) -> None:
        self.keyring = status
        self.keyring_label.setText(status.message)

    def changed(self) -> None:
        if self._loading:
            return
        self.problems = validate(self.draft)
        self._show_all_problems()
        self.status_label.setText("")
        self.apply_button.setEnabled(not self.problems)
        self.ok_button.setEnabled(not self.problems)

    # --- layout -----------------------------------------------------------------------------

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        self.tabs = QTabWidget()
        self.tabs.addTab(self._server_tab(), "Server")
        self.tabs.addTab(self._providers_tab(), "Providers")
        self.tabs.addTab(self._aliases_tab(), "Aliases && tiers")
        self.tabs.addTab(self._keys_tab(), "Access keys")
        self.tabs.addTab(self._routing_tab(), "Routing")
        layout.addWidget(self.tabs, 1)
        self.problems_label = error_label()
        layout.addWidget(self.problems_label)
        bottom = QHBoxLayout()
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        bottom.addWidget(self.status_label, 1)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok
            | QDialogButtonBox.StandardButton.Cancel
            | QDialogButtonBox.StandardButton.Apply
        )
        self.ok_button = buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.apply_button = buttons.button(QDialogButtonBox.StandardButton.Apply)
        self.ok_button.clicked.connect(lambda: self.apply(close=True))
        self.apply_button.clicked.connect(lambda: self.apply(close=False))
        buttons.rejected.connect(self.reject)
        bottom.addWidget(buttons)
        layout.addLayout(bottom)

    def _server_tab(self) -> QWidget:
        page = QWidget()
        outer = QVBoxLayout(page)
        net = QGroupBox("Gateway")
        form = QFormLayout(net)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        self.host_edit = QLineEdit()
        self.host_edit.setMinimumWidth(260)
        self.host_edit.setPlaceholderText("127.0.0.1")
        self.host_error = error_label()
        self.port_spin = QSpinBox()
        self.port_spin.setRange(0, 65535)
        self.port_spin.setToolTip("0 picks any free port")
        self.port_spin.setMinimumWidth(110)
        self.port_error = error_label()
        self.host_note = QLabel("")
        self.host_note.setWordWrap(True)
        self.host_note.setMinimumWidth(560)
        form.addRow("Listen on:", self.host_edit)
        form.addRow("", self.host_error)
        form.addRow("Port:", self.port_spin)
        form.addRow("", self.port_error)
        form.addRow("", self.host_note)
        self.start_on_launch = QCheckBox("Start the gateway when Desktop Proxy starts")
        self.start_at_login = QCheckBox("Start Desktop Proxy when I log in")
        form.addRow("", self.start_on_launch)
        form.addRow("", self.start_at_login)
        outer.addWidget(net)

        hist = QGroupBox("Request history")
        hform = QFormLayout(hist)
        hform.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        self.history_enabled = QCheckBox("Record requests (model, tokens, cost, timing)")
        self.store_bodies = QCheckBox("Also keep request and response bodies")
        self.retention_spin = QSpinBox()
        self.retention_spin.setRange(0, 3650)
        self.retention_spin.setSuffix(" days")
        self.retention_spin.setMinimumWidth(110)
        self.max_size_spin = QSpinBox()
        self.max_size_spin.setRange(0, 100_000)
        self.max_size_spin.setSuffix(" MB")
        self.max_size_spin.setMinimumWidth(110)
        self.history_error = error_label()
        hform.addRow("", self.history_enabled)
        hform.addRow("", self.store_bodies)
        hform.addRow("Keep for:", self.retention_spin)
        hform.addRow("At most:", self.max_size_spin)
        hform.addRow("", self.history_error)
        outer.addWidget(hist)
        outer.addStretch(1)

        self.host_edit.textEdited.connect(self._server_edited)
        self.port_spin.valueChanged.connect(self._server_edited)
        self.history_enabled.toggled.connect(self._server_edited)
        self.store_bodies.toggled.connect(self._server_edited)
        self.retention_spin.valueChanged.connect(self._server_edited)
        self.max_size_spin.valueChanged.connect(self._server_edited)
        self.start_at_login.toggled.connect(lambda on: setattr(self, "autostart", on))
        return page

    def _providers_tab(self) -> QWidget:
        page = QWidget()
        outer = QHBoxLayout(page)
        splitter = QSplitter()
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        self.provider_list = QListWidget()
        self.provider_list.currentRowChanged.connect(self._provider_selected)
        left_layout.addWidget(self.provider_list, 1)
        row = QHBoxLayout()
        self.add_provider_button = QPushButton("Add…")
        preset_menu = QMenu(self.add_provider_button)
        for kind, preset in PRESETS.items():
            action = preset_menu.addAction(preset.label)
            action.triggered.connect(lambda _c=False, k=kind: self.add_provider(k))
        self.add_provider_button.setMenu(preset_menu)
        self.remove_provider_button = QPushButton("Remove")
        self.remove_provider_button.clicked.connect(self.remove_provider)
        self.up_button = QPushButton("↑")
        self.down_button = QPushButton("↓")
        self.up_button.setToolTip("Try this provider earlier (failover order)")
        self.down_button.setToolTip("Try this provider later")
        for b in (self.up_button, self.down_button):
            b.setFixedWidth(32)
        self.up_button.clicked.connect(lambda: self.move_provider(-1))
        self.down_button.clicked.connect(lambda: self.move_provider(1))
        row.addWidget(self.add_provider_button)
        row.addWidget(self.remove_provider_button)
        row.addStretch(1)
        row.addWidget(self.up_button)
        row.addWidget(self.down_button)
        left_layout.addLayout(row)
        splitter.addWidget(left)

        self.provider_form = QWidget()
        form = QFormLayout(self.provider_form)
        self.p_name = QLineEdit()
        self.p_kind = QLabel("")
        self.p_url = QLineEdit()
        self.p_enabled = QCheckBox("Enabled")
        self.p_weight = QSpinBox()
        self.p_weight.setRange(0, 1000)
        self.p_weight.setToolTip("Share of requests with the weighted strategy")
        self.p_keys = QListWidget()
        self.p_keys.setMaximumHeight(72)
        key_row = QHBoxLayout()
        self.add_key_button = QPushButton("Add key…")
        self.remove_key_button = QPushButton("Remove key")
        self.add_key_button.clicked.connect(self.add_key)
        self.remove_key_button.clicked.connect(self.remove_key)
        key_row.addWidget(self.add_key_button)
        key_row.addWidget(self.remove_key_button)
        key_row.addStretch(1)
        self.p_models = QListWidget()
        self.p_models.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        model_row = QHBoxLayout()
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("Model id, e.g. gpt-4o-mini")
        self.add_model_button = QPushButton("Add")
        self.remove_model_button = QPushButton("Remove")
        self.fetch_button = QPushButton("Fetch models")
        self.add_model_button.clicked.connect(self.add_model)
        self.model_edit.returnPressed.connect(self.add_model)
        self.remove_model_button.clicked.connect(self.remove_models)
        self.fetch_button.clicked.connect(self.fetch_models)
        model_row.addWidget(self.model_edit, 1)
        model_row.addWidget(self.add_model_button)
        model_row.addWidget(self.remove_model_button)
        model_row.addWidget(self.fetch_button)
        test_row = QHBoxLayout()
        self.test_button = QPushButton("Test connection")
        self.test_button.clicked.connect(self.test_connection)
        self.test_result = QLabel("")
        self.test_result.setWordWrap(True)
        test_row.addWidget(self.test_button)
        test_row.addWidget(self.test_result, 1)
        self.provider_error = error_label()
        self.provider_notes = QLabel("")
        self.provider_notes.setWordWrap(True)
        self.provider_notes.setStyleSheet("color: palette(placeholder-text);")
        enabled_row = QHBoxLayout()
        enabled_row.addWidget(self.p_enabled)
        enabled_row.addSpacing(24)
        enabled_row.addWidget(QLabel("Weight:"))
        enabled_row.addWidget(self.p_weight)
        enabled_row.addStretch(1)
        form.addRow("Name:", self.p_name)
        form.addRow("Kind:", self.p_kind)
        form.addRow("Base URL:", self.p_url)
        form.addRow("", enabled_row)
        form.addRow("API keys:", self.p_keys)
        form.addRow("", key_row)
        form.addRow("Models:", self.p_models)
        form.addRow("", model_row)
        form.addRow("", test_row)
        form.addRow("", self.provider_error)
        form.addRow("", self.provider_notes)
        splitter.addWidget(self.provider_form)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 3)
        splitter.setSizes([220, 620])
        outer.addWidget(splitter)

        self.p_name.textEdited.connect(self._provider_edited)
        self.p_url.textEdited.connect(self._provider_edited)
        self.p_enabled.toggled.connect(self._provider_edited)
        self.p_weight.valueChanged.connect(self._provider_edited)
        self.p_models.itemChanged.connect(lambda _i: self._provider_edited())
        return page

    def _aliases_tab(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        intro = QLabel(
            "An alias is a short name clients can use as the model, e.g. <i>fast</i> → "
            "<i>groq:llama-3.1-8b-instant</i>. Tiers answer Claude Code's big, middle and small "
            "model names (opus, sonnet, haiku)."
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)
        self.alias_table = QTableWidget(0, 2)
        self.alias_table.setHorizontalHeaderLabels(["Alias", "Model reference"])
        self.alias_table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.alias_table.horizontalHeader().resizeSection(0, 200)
        self.alias_table.verticalHeader().setVisible(False)
        self.alias_table.itemChanged.connect(lambda _i: self._aliases_edited())
        layout.addWidget(self.alias_table, 1)
        row = QHBoxLayout()
        add = QPushButton("Add alias")
        remove = QPushButton("Remove alias")
        add.clicked.connect(self.add_alias)
        remove.clicked.connect(self.remove_alias)
        row.addWidget(add)
        row.addWidget(remove)
        row.addStretch(1)
        layout.addLayout(row)
        self.alias_error = error_label()
        layout.addWidget(self.alias_error)
        tiers = QGroupBox("Tiers")
        form = QFormLayout(tiers)
        self.tier_boxes: dict[str, QComboBox] = {}
        for tier, label in (
            ("big", "Big (opus):"),
            ("middle", "Middle (sonnet):"),
            ("small", "Small (haiku):"),
        ):
            box = QComboBox()
            box.setEditable(True)
            box.setMinimumContentsLength(30)
            box.currentTextChanged.connect(lambda _t: self._tiers_edited())
            self.tier_boxes[tier] = box
            form.addRow(label, box)
        self.tier_error = error_label()
        form.addRow("", self.tier_error)
        layout.addWidget(tiers)
        return page

    def _keys_tab(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        self.keys_note = QLabel("")
        self.keys_note.setWordWrap(True)
        layout.addWidget(self.keys_note)
        self.key_table = QTableWidget(0, 2)
        self.key_table.setHorizontalHeaderLabels(["Name", "Key"])
        self.key_table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.key_table.horizontalHeader().resizeSection(0, 200)
        self.key_table.verticalHeader().setVisible(False)
        self.key_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.key_table.itemChanged.connect(self._key_name_edited)
        layout.addWidget(self.key_table, 1)
        row = QHBoxLayout()
        self.generate_key_button = QPushButton("Generate key")
        self.copy_key_button = QPushButton("Copy")
        self.revoke_key_button = QPushButton("Revoke")
        self.generate_key_button.clicked.connect(self.generate_key)
        self.copy_key_button.clicked.connect(self.copy_key)
        self.revoke_key_button.clicked.connect(self.revoke_key)
        for b in (self.generate_key_button, self.copy_key_button, self.revoke_key_button):
            row.addWidget(b)
        row.addStretch(1)
        layout.addLayout(row)
        self.keys_error = error_label()
        layout.addWidget(self.keys_error)
        self.keyring_label = QLabel("")
        self.keyring_label.setWordWrap(True)
        self.keyring_label.setStyleSheet("color: palette(placeholder-text);")
        layout.addWidget(self.keyring_label)
        return page

    def _routing_tab(self) -> QWidget:
        page = QWidget()
        outer = QVBoxLayout(page)
        box = QGroupBox("Routing")
        form = QFormLayout(box)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        self.strategy_box = QComboBox()
        for strategy in STRATEGIES:
            self.strategy_box.addItem(strategy, strategy)
        self.strategy_help = QLabel("")
        self.strategy_help.setWordWrap(True)
        self.connect_spin = self._seconds(0.1, 600)
        self.read_spin = self._seconds(1, 3600)
        self.cooldown_spin = self._seconds(0, 3600)
        form.addRow("Strategy:", self.strategy_box)
        form.addRow("", self.strategy_help)
        form.addRow("Connect timeout:", self.connect_spin)
        form.addRow("Read timeout:", self.read_spin)
        form.addRow("Cool-down after a failure:", self.cooldown_spin)
        self.routing_error = error_label()
        form.addRow("", self.routing_error)
        outer.addWidget(box)
        outer.addStretch(1)
        self.strategy_box.currentIndexChanged.connect(self._routing_edited)
        for spin in (self.connect_spin, self.read_spin, self.cooldown_spin):
            spin.valueChanged.connect(self._routing_edited)
        return page

    @staticmethod
    def _seconds(low: float, high: float) -> QDoubleSpinBox:
        spin = QDoubleSpinBox()
        spin.setRange(low, high)
        spin.setDecimals(1)
        spin.setSuffix(" s")
        return spin

    # --- loading the draft into widgets -----------------------------------------------------

    def _load_all(self) -> None:
        self._loading = True
        try:
            d = self.draft
            self.host_edit.setText(d.server.host)
            self.port_spin.setValue(d.server.port)
            self.start_on_launch.setChecked(self.hooks.prefs.start_gateway_on_launch)
            self.start_at_login.setChecked(self.autostart)
            self.history_enabled.setChecked(d.history.enabled)
            self.store_bodies.setChecked(d.history.store_bodies)
            self.retention_spin.setValue(d.history.retention_days)
            self.max_size_spin.setValue(d.history.max_size_mb)
            self._fill_provider_list()
            self.provider_list.setCurrentRow(0 if d.providers else -1)
            self._load_provider()
            self._fill_aliases()
            self._fill_keys()
            self.strategy_box.setCurrentIndex(
                max(0, self.strategy_box.findData(d.routing.strategy))
            )
            self.connect_spin.setValue(d.routing.timeouts.connect)
            self.read_spin.setValue(d.routing.timeouts.read)
            self.cooldown_spin.setValue(d.routing.cooldown)
            self.strategy_help.setText(STRATEGY_HELP.get(d.routing.strategy, ""))
        finally:
            self._loading = False
        self._update_notes()
        self.changed()

    def _fill_provider_list(self) -> None:
        current = self.provider_list.currentRow()
        self.provider_list.blockSignals(True)
        self.provider_list.clear()
        for i, p in enumerate(self.draft.providers):
            label = provider_label(p)
            item = QListWidgetItem(label)
            item.setSizeHint(QSize(0, 28))
            if problems_for(self.problems, "providers", i):
                item.setText("⚠ " + label)
                item.setForeground(Qt.GlobalColor.red)
            elif not p.enabled:
                item.setForeground(Qt.GlobalColor.gray)
            self.provider_list.addItem(item)
        self.provider_list.setCurrentRow(min(current, len(self.draft.providers) - 1))
        self.provider_list.blockSignals(False)

    def current_provider(self) -> ProviderConfig | None:
        row = self.provider_list.currentRow()
        return self.draft.providers[row] if 0 <= row < len(self.draft.providers) else None

    def _provider_selected(self, _row: int) -> None:
        self._loading = True
        try:
            self._load_provider()
        finally:
            self._loading = False
        self._show_all_problems()

    def _load_provider(self) -> None:
        p = self.current_provider()
        self.provider_form.setEnabled(p is not None)
        self.remove_provider_button.setEnabled(p is not None)
        self.test_result.setText("")
        if p is None:
            for edit in (self.p_name, self.p_url):
                edit.setText("")
            self.p_kind.setText("")
            self.p_keys.clear()
            self.p_models.clear()
            self.provider_notes.setText("Add a provider with “Add…”.")
            return
        preset = get_preset(p.kind)
        self.p_name.setText(p.name)
        self.p_kind.setText(f"{preset.label} ({p.kind})" if preset else p.kind)
        self.p_url.setText(p.base_url)
        self.p_url.setPlaceholderText(preset.base_url or "" if preset else "")
        self.p_enabled.setChecked(p.enabled)
        self.p_weight.setValue(p.weight)
        self._fill_keys_list(p)
        self.p_models.blockSignals(True)
        self.p_models.clear()
        for model in p.models:
            self._add_model_item(model, checked=True)
        self.p_models.blockSignals(False)
        self.add_key_button.setEnabled(p.requires_key)
        notes = preset.notes if preset else ""
        if not p.requires_key:
            notes = (notes + " No API key needed.").strip()
        self.provider_notes.setText(notes)

    def _fill_keys_list(self, p: ProviderConfig) -> None:
        self.p_keys.clear()
        for ref in p.api_keys:
            self.p_keys.addItem(describe_key(ref, self.pending_secrets))
        if not p.api_keys and p.requires_key:
            item = QListWidgetItem("No key yet: add one with “Add key…”")
            item.setFlags(Qt.ItemFlag.NoItemFlags)
            self.p_keys.addItem(item)

    def _add_model_item(self, model: str, *, checked: bool) -> None:
        item = QListWidgetItem(model)
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
        self.p_models.addItem(item)

    def _fill_aliases(self) -> None:
        self.alias_table.blockSignals(True)
        self.alias_table.setRowCount(0)
        for name, target in self.draft.aliases.items():
            row = self.alias_table.rowCount()
            self.alias_table.insertRow(row)
            self.alias_table.setItem(row, 0, QTableWidgetItem(name))
            self.alias_table.setItem(row, 1, QTableWidgetItem(target))
        self.alias_table.blockSignals(False)
        self._fill_tier_boxes()

    def _fill_tier_boxes(self) -> None:
        refs = known_model_refs(self.draft)
        for tier, box in self.tier_boxes.items():
            value = getattr(self.draft.tiers, tier)
            box.blockSignals(True)
            box.clear()
            box.addItem(NOT_SET)
            box.addItems(refs)
            box.setCurrentText(value or NOT_SET)
            box.blockSignals(False)

    def _fill_keys(self) -> None:
        self.key_table.blockSignals(True)
        self.key_table.setRowCount(0)
        for entry in self.draft.access_keys:
            row = self.key_table.rowCount()
            self.key_table.insertRow(row)
            self.key_table.setItem(row, 0, QTableWidgetItem(entry.name))
            shown = QTableWidgetItem(describe_key(entry.key, self.pending_secrets))
            shown.setFlags(shown.flags() & ~Qt.ItemFlag.ItemIsEditable)
            self.key_table.setItem(row, 1, shown)
        self.key_table.blockSignals(False)
        has = bool(self.draft.access_keys)
        self.copy_key_button.setEnabled(has)
        self.revoke_key_button.setEnabled(has)

    def _update_notes(self) -> None:
        note = loopback_note(self.draft.server.host or "127.0.0.1", bool(self.draft.access_keys))
        self.keys_note.setText(note)
        self.host_note.setText(note.replace("one of these keys", "an access key"))

    # --- edits ------------------------------------------------------------------------------

    def _server_edited(self) -> None:
        if self._loading:
            return
        s = self.draft.server
        s.host = self.host_edit.text().strip()
        s.port = self.port_spin.value()
        h = self.draft.history
        h.enabled = self.history_enabled.isChecked()
        h.store_bodies = self.store_bodies.isChecked()
        h.retention_days = self.retention_spin.value()
        h.max_size_mb = self.max_size_spin.value()
        self.store_bodies.setEnabled(h.enabled)
        self._update_notes()
        self.changed()

    def _provider_edited(self) -> None:
        p = self.current_provider()
        if self._loading or p is None:
            return
        old_name, p.name = p.name, self.p_name.text().strip()
        p.base_url = self.p_url.text().strip()
        p.enabled = self.p_enabled.isChecked()
        p.weight = self.p_weight.value()
        p.models = [
            self.p_models.item(i).text()
            for i in range(self.p_models.count())
            if self.p_models.item(i).checkState() == Qt.CheckState.Checked
        ]
        if old_name != p.name:
            self._rename_references(old_name, p.name)
        self.changed()
        self._fill_provider_list()
        self._fill_tier_boxes()

    def _rename_references(self, old: str, new: str) -> None:
        """Aliases and tiers follow a renamed provider."""
        if not old or not new:
            return

        def renamed(ref: str) -> str:
            return f"{new}:{ref[len(old) + 1 :]}" if ref.startswith(old + ":") else ref

        self.draft.aliases = {k: renamed(v) for k, v in self.draft.aliases.items()}
        for tier in ("big", "middle", "small"):
            value = getattr(self.draft.tiers, tier)
            if value:
                setattr(self.draft.tiers, tier, renamed(value))
        self._fill_aliases()

    def add_provider(self, kind: str) -> None:
        preset = PRESETS[kind]
        provider = provider_from_preset(preset, (p.name for p in self.draft.providers))
        self.draft.providers.append(provider)
        self.changed()
        self._fill_provider_list()
        self.provider_list.setCurrentRow(len(self.draft.providers) - 1)
        self._fill_tier_boxes()
        self.tabs.setCurrentIndex(1)
        self.p_name.setFocus()

    def remove_provider(self) -> None:
        row = self.provider_list.currentRow()
        if not 0 <= row < len(self.draft.providers):
            return
        removed = self.draft.providers.pop(row)
        self._forget_unused(removed.api_keys)
        self.changed()
        self._fill_provider_list()
        self.provider_list.setCurrentRow(min(row, len(self.draft.providers) - 1))
        self._provider_selected(self.provider_list.currentRow())
        self._fill_tier_boxes()

    def move_provider(self, delta: int) -> None:
        row = self.provider_list.currentRow()
        new = row + delta
        providers = self.draft.providers
        if not (0 <= row < len(providers) and 0 <= new < len(providers)):
            return
        providers[row], providers[new] = providers[new], providers[row]
        self.changed()
        self._fill_provider_list()
        self.provider_list.setCurrentRow(new)

    def _ask_key(self, provider: str) -> tuple[str, str] | None:
        dialog = KeyDialog(provider, self.keyring, self)
        if dialog.exec() != QDialog.DialogCode.Accepted:
            return None
        return dialog.result_choice()

    def add_key(self) -> None:
        p = self.current_provider()
        if p is None:
            return
        answer = self.ask_key(p.name)
        if answer is None:
            return
        where, value = answer
        if where == "env":
            ref = f"env:{value}"
        elif where == "plain":
            ref = value
        else:
            taken = keyring_entries(self.draft) | set(self.pending_secrets)
            entry = keyring_entry_name("provider", p.name, taken)
            self.pending_secrets[entry] = value
            ref = KEYRING_PREFIX + entry
        p.api_keys.append(ref)
        self._fill_keys_list(p)
        self.changed()

    def remove_key(self) -> None:
        p = self.current_provider()
        row = self.p_keys.currentRow()
        if p is None or not 0 <= row < len(p.api_keys):
            return
        ref = p.api_keys.pop(row)
        self._forget_unused([ref])
        self._fill_keys_list(p)
        self.changed()

    def _forget_unused(self, refs: list[str]) -> None:
        still_used = keyring_entries(self.draft)
        for ref in refs:
            parsed = parse_ref(ref)
            if parsed.kind != "keyring" or parsed.value in still_used:
                continue
            if parsed.value in self.pending_secrets:
                del self.pending_secrets[parsed.value]
            elif parsed.value not in self.forget:
                self.forget.append(parsed.value)

    def add_model(self) -> None:
        p = self.current_provider()
        model = self.model_edit.text().strip()
        if p is None or not model:
            return
        existing = [self.p_models.item(i).text() for i in range(self.p_models.count())]
        if model in existing:
            self.p_models.item(existing.index(model)).setCheckState(Qt.CheckState.Checked)
        else:
            self._add_model_item(model, checked=True)
        self.model_edit.clear()
        self._provider_edited()

    def remove_models(self) -> None:
        for item in self.p_models.selectedItems():
            self.p_models.takeItem(self.p_models.row(item))
        self._provider_edited()

    def _provider_key(self, p: ProviderConfig) -> str | None:
        if not p.api_keys:
            return None
        ref = p.api_keys[0]
        parsed = parse_ref(ref)
        if parsed.kind == "keyring" and parsed.value in self.pending_secrets:
            return self.pending_secrets[parsed.value]
        return ref

    def fetch_models(self) -> None:
        p = self.current_provider()
        if p is None:
            return
        target = copy.deepcopy(p)
        self.fetch_button.setEnabled(False)
        self.test_result.setText("Fetching models…")
        self.test_result.setStyleSheet("")

        def done(result: ConnectionResult) -> None:
            self.fetch_button.setEnabled(True)
            self._show_result(result)
            if not result.ok or self.current_provider() is not p:
                return
            existing = {self.p_models.item(i).text() for i in range(self.p_models.count())}
            self.p_models.blockSignals(True)
            for model in result.models:
                if model not in existing:
                    self._add_model_item(model, checked=False)
            self.p_models.blockSignals(False)
            self.test_result.setText(
                result.message + " Tick the ones clients may use."
                if result.models
                else result.message
            )

        self.bridge.runner.run(
            self.bridge.facade.test_connection(target, self._provider_key(p)),
            done,
            lambda exc: done(ConnectionResult(False, str(exc))),
        )

    def test_connection(self) -> None:
        p = self.current_provider()
        if p is None:
            return
        self.test_button.setEnabled(False)
        self.test_result.setText("Testing…")
        self.test_result.setStyleSheet("")

        def done(result: ConnectionResult) -> None:
            self.test_button.setEnabled(True)
            self._show_result(result)

        self.bridge.runner.run(
            self.bridge.facade.test_connection(copy.deepcopy(p), self._provider_key(p)),
            done,
            lambda exc: done(ConnectionResult(False, str(exc))),
        )

    def _show_result(self, result: ConnectionResult) -> None:
        mark = "✓ " if result.ok else "✕ "
        self.test_result.setText(mark + result.message)
        self.test_result.setStyleSheet(OK_STYLE if result.ok else ERROR_STYLE)

    def _aliases_edited(self) -> None:
        if self._loading:
            return
        aliases: dict[str, str] = {}
        for row in range(self.alias_table.rowCount()):
            name_item = self.alias_table.item(row, 0)
            target_item = self.alias_table.item(row, 1)
            name = name_item.text().strip() if name_item else ""
            target = target_item.text().strip() if target_item else ""
            if name or target:
                aliases[name] = target
        self.draft.aliases = aliases
        self.changed()
        self._fill_tier_boxes()

    def add_alias(self) -> None:
        self.alias_table.blockSignals(True)
        row = self.alias_table.rowCount()
        self.alias_table.insertRow(row)
        name_item = QTableWidgetItem("")
        self.alias_table.setItem(row, 0, name_item)
        refs = known_model_refs(self.draft)
        self.alias_table.setItem(row, 1, QTableWidgetItem(refs[0] if refs else ""))
        self.alias_table.blockSignals(False)
        self.alias_table.setCurrentCell(row, 0)
        self.alias_table.editItem(name_item)

    def remove_alias(self) -> None:
        row = self.alias_table.currentRow()
        if row >= 0:
            self.alias_table.removeRow(row)
            self._aliases_edited()

    def _tiers_edited(self) -> None:
        if self._loading:
            return
        for tier, box in self.tier_boxes.items():
            text = box.currentText().strip()
            setattr(self.draft.tiers, tier, None if text in ("", NOT_SET) else text)
        self.changed()

    def _key_name_edited(self, item: QTableWidgetItem) -> None:
        if self._loading or item.column() != 0:
            return
        row = item.row()
        if 0 <= row < len(self.draft.access_keys):
            self.draft.access_keys[row].name = item.text().strip()
            self.changed()

    def generate_key(self) -> None:
        names = {k.name for k in self.draft.access_keys}
        name = "default" if "default" not in names else f"key-{len(names) + 1}"
        while name in names:
            name += "-x"
        if self.isVisible():
            typed, ok = QInputDialog.getText(self, "New access key", "Name:", text=name)
            if not ok:
                return
            name = typed.strip() or name
        value = generate_access_key()
        taken = keyring_entries(self.draft) | set(self.pending_secrets)
        entry = keyring_entry_name("access", name, taken)
        if self.keyring is not None and not self.keyring.available:
            ref = value  # no keyring: the dialog below says where it went
            QMessageBox.warning(
                self,
                "No keyring",
                "There is no OS keyring on this system, so the access key will be written "
                "into config.json (readable by your user only).",
            )
        else:
            self.pending_secrets[entry] = value
            ref = KEYRING_PREFIX + entry
        self.draft.access_keys.append(AccessKey(name=name, key=ref))
        self._fill_keys()
        self._update_notes()
        self.changed()
        QGuiApplication.clipboard().setText(value)
        self.status_label.setText(f"Access key “{name}” generated and copied to the clipboard.")

    def copy_key(self) -> None:
        row = self.key_table.currentRow()
        if not 0 <= row < len(self.draft.access_keys):
            row = 0 if self.draft.access_keys else -1
        if row < 0:
            return
        ref = self.draft.access_keys[row].key
        parsed = parse_ref(ref)
        if parsed.kind == "keyring" and parsed.value in self.pending_secrets:
            QGuiApplication.clipboard().setText(self.pending_secrets[parsed.value])
            return
        self.bridge.runner.run(
            self.bridge.facade.resolve_secret(ref),
            QGuiApplication.clipboard().setText,
            lambda exc: self.status_label.setText(f"Cannot read the key: {exc}"),
        )

    def revoke_key(self) -> None:
        row = self.key_table.currentRow()
        if not 0 <= row < len(self.draft.access_keys):
            return
        removed = self.draft.access_keys.pop(row)
        self._forget_unused([removed.key])
        self._fill_keys()
        self._update_notes()
        self.changed()

    def _routing_edited(self) -> None:
        if self._loading:
            return
        r = self.draft.routing
        r.strategy = self.strategy_box.currentData()
        r.timeouts.connect = self.connect_spin.value()
        r.timeouts.read = self.read_spin.value()
        r.cooldown = self.cooldown_spin.value()
        self.strategy_help.setText(STRATEGY_HELP.get(r.strategy, ""))
        self.changed()

    # --- problems ---------------------------------------------------------------------------

    def _show_all_problems(self) -> None:
        problems = self.problems
        server = problems_for(problems, "server")
        show_problems(self.host_error, [p for p in server if p.field == "host"])
        show_problems(self.port_error, [p for p in server if p.field != "host"])
        show_problems(self.history_error, problems_for(problems, "history"))
        row = self.provider_list.currentRow()
        show_problems(self.provider_error, problems_for(problems, "providers", row))
        show_problems(self.alias_error, problems_for(problems, "aliases"), with_path=True)
        show_problems(self.tier_error, problems_for(problems, "tiers"), with_path=True)
        show_problems(self.keys_error, problems_for(problems, "accessKeys"), with_path=True)
        show_problems(self.routing_error, problems_for(problems, "routing"))
        for i in range(self.alias_table.rowCount()):
            item = self.alias_table.item(i, 0)
            if item is None:
                continue
            bad = [p for p in problems if p.section == "aliases" and item.text() in p.path]
            item.setForeground(Qt.GlobalColor.red if bad else self.palette().text().color())
        self._fill_provider_list_marks()
        count = len(problems)
        if count:
            self.problems_label.setText(
                f"{count} problem{'s' if count != 1 else ''} to fix before saving: "
                + problems[0].text
                + (" …" if count > 1 else "")
            )
        self.problems_label.setVisible(bool(count))

    def _fill_provider_list_marks(self) -> None:
        for i in range(self.provider_list.count()):
            item = self.provider_list.item(i)
            text = item.text().removeprefix("⚠ ")
            if problems_for(self.problems, "providers", i):
                item.setText("⚠ " + text)
                item.setForeground(Qt.GlobalColor.red)
            else:
                item.setText(text)
                p = self.draft.providers[i] if i < len(self.draft.providers) else None
                gray = p is not None and not p.enabled
                item.setForeground(Qt.GlobalColor.gray if gray else self.palette().text().color())

    # --- apply ------------------------------------------------------------------------------

    def apply(self, *, close: bool = False) -> None:
        self.changed()
        if self.problems:
            return
        prefs = self.hooks.prefs
        if prefs.start_gateway_on_launch != self.start_on_launch.isChecked():
            prefs.start_gateway_on_launch = self.start_on_launch.isChecked()
            self.hooks.save_prefs(prefs)
        if self.autostart != self.hooks.autostart_enabled():
            self.hooks.set_autostart(self.autostart)
        config = copy.deepcopy(self.draft)
        secrets = dict(self.pending_secrets)
        forget = list(self.forget)
        self.apply_button.setEnabled(False)
        self.ok_button.setEnabled(False)
        self.status_label.setText("Saving…")

        def done(result: ApplyResult) -> None:
            self.apply_button.setEnabled(True)
            self.ok_button.setEnabled(True)
            for entry in secrets:
                self.pending_secrets.pop(entry, None)
            self.forget = [e for e in self.forget if e not in forget]
            if result.listener_error:
                self.status_label.setText(
                    "Saved, but the gateway could not move: " + result.listener_error
                )
                self.status_label.setStyleSheet(ERROR_STYLE)
            else:
                self.status_label.setStyleSheet(OK_STYLE)
                self.status_label.setText(
                    "Saved. The gateway now listens on the new address."
                    if result.restarted
                    else "Saved and applied."
                )
            self._reload_lists()
            self.applied.emit(result)
            self.bridge.publish_status()
            if close and not result.listener_error:
                self.accept()

        def failed(exc: BaseException) -> None:
            self.apply_button.setEnabled(True)
            self.ok_button.setEnabled(True)
            self.status_label.setStyleSheet(ERROR_STYLE)
            self.status_label.setText(f"Not saved: {exc}")

        self.bridge.runner.run(
            self.bridge.facade.apply_config(config, secrets, forget), done, failed
        )

    def _reload_lists(self) -> None:
        p = self.current_provider()
        if p is not None:
            self._fill_keys_list(p)
        self._fill_keys()

    def closeEvent(self, event: QCloseEvent) -> None:
        event.accept()
