"""What the Serve page serves and to whom: the adapters over the base model, who may connect, the
API key and the port.

Only the adapters made for the page's model are listed: finding them reads the model's weight
files here and there (its fingerprint), so the page lists them on a worker thread and hands the
names to ``set_adapters``.
"""

from __future__ import annotations

import secrets
from typing import Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

LOCAL_HOST = "127.0.0.1"
EVERY_INTERFACE = "0.0.0.0"
DEFAULT_PORT = 8000
_KEY_BYTES = 24  # secrets.token_urlsafe(24): 32 characters, 192 random bits


class ServeSettingsForm(QWidget):
    """The choices; ``changed`` whenever one of them changes."""

    changed = Signal()

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._build_adapters(), 1)
        layout.addWidget(self._build_network())
        self._network_changed(False)

    def _build_adapters(self) -> QGroupBox:
        box = QGroupBox("Adapters", self)
        self.adapters_list = QListWidget(box)
        self.adapters_list.setAccessibleName("Adapters")
        self.adapters_list.setToolTip("Check the adapters to serve over the base model. A request picks one by "
                                      "naming it in its \"model\" field; the base is loaded once and the adapters "
                                      "are swapped on it.")
        self.adapters_note = QLabel(box)
        self.adapters_note.setWordWrap(True)
        layout = QVBoxLayout(box)
        layout.addWidget(self.adapters_list, 1)
        layout.addWidget(self.adapters_note)
        self.adapters_list.itemChanged.connect(lambda _item: self.changed.emit())
        return box

    def _build_network(self) -> QGroupBox:
        box = QGroupBox("Network", self)
        self.others_check = QCheckBox("Let other machines connect", box)
        self.others_check.setToolTip("Listen on every network interface (0.0.0.0) instead of this machine's own "
                                     "address (127.0.0.1). Others must then send the API key.")
        self.host_label = QLabel(box)
        self.host_label.setAccessibleName("Host")
        self.key_edit = QLineEdit(box)
        self.key_edit.setAccessibleName("API key")
        self.key_edit.setToolTip("Clients send it as \"Authorization: Bearer KEY\" (the openai package's api_key). "
                                 "Required when other machines may connect.")
        self.generate_button = QPushButton("Generate", box)
        self.generate_button.setToolTip("Make a new random key")
        self.port_spin = QSpinBox(box)
        self.port_spin.setAccessibleName("Port")
        self.port_spin.setRange(0, 65535)
        self.port_spin.setValue(DEFAULT_PORT)
        self.port_spin.setSpecialValueText("any free port")
        self.port_spin.setToolTip("The TCP port to listen on (0: any free one, shown once serving)")
        key_row = QHBoxLayout()
        key_row.addWidget(self.key_edit, 1)
        key_row.addWidget(self.generate_button)
        form = QFormLayout(box)
        form.addRow(self.others_check)
        form.addRow("Host:", self.host_label)
        form.addRow("API key:", key_row)
        form.addRow("Port:", self.port_spin)
        self.others_check.toggled.connect(self._network_changed)
        self.generate_button.clicked.connect(lambda: self.key_edit.setText(secrets.token_urlsafe(_KEY_BYTES)))
        self.key_edit.textChanged.connect(lambda _text: self.changed.emit())
        self.port_spin.valueChanged.connect(lambda _value: self.changed.emit())
        return box

    def _network_changed(self, others: bool) -> None:
        self.host_label.setText(f"{EVERY_INTERFACE} (every network)" if others else f"{LOCAL_HOST} (this machine only)")
        self.key_edit.setEnabled(others)
        self.generate_button.setEnabled(others)
        self.key_edit.setPlaceholderText("required" if others else "not needed")
        self.changed.emit()

    # ------------------------------------------------------------------ the adapters
    def set_adapters(self, names: list[str]) -> None:
        """List these library adapters (those made for the model), keeping what was checked."""
        checked = set(self.checked_adapters())
        self.adapters_list.blockSignals(True)
        self.adapters_list.clear()
        for name in names:
            item = QListWidgetItem(name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if name in checked else Qt.CheckState.Unchecked)
            self.adapters_list.addItem(item)
        self.adapters_list.blockSignals(False)
        self.adapters_note.setText("" if names else "No adapter in the library was made for this model: "
                                   "the server answers with the base model alone.")
        self.adapters_note.setVisible(not names)
        self.changed.emit()

    def set_checked(self, names: list[str]) -> None:
        for row in range(self.adapters_list.count()):
            item = self.adapters_list.item(row)
            item.setCheckState(Qt.CheckState.Checked if item.text() in names else Qt.CheckState.Unchecked)

    def checked_adapters(self) -> list[str]:
        return [self.adapters_list.item(row).text() for row in range(self.adapters_list.count())
                if self.adapters_list.item(row).checkState() == Qt.CheckState.Checked]

    # ------------------------------------------------------------------ reading
    @property
    def host(self) -> str:
        return EVERY_INTERFACE if self.others_check.isChecked() else LOCAL_HOST

    @property
    def api_key(self) -> Optional[str]:
        """The key clients must send; None when only this machine may connect."""
        return (self.key_edit.text().strip() or None) if self.others_check.isChecked() else None
