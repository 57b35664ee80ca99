"""How to reach the Serve page's server: its base URL, the model names it answers to, and a curl
and a Python snippet for the model picked (``engine.serve.snippets``), each with a Copy button."""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

_IDLE_URL = "Not serving: press Start."
_SNIPPET_LINES = 8


class SnippetView(QWidget):
    """A read-only snippet in a fixed-width font, and a button that copies it."""

    def __init__(self, what: str, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.text = QPlainTextEdit(self)
        self.text.setReadOnly(True)
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.text.setAccessibleName(f"{what} snippet")
        self.text.setFixedHeight(self.text.fontMetrics().lineSpacing() * _SNIPPET_LINES + 12)
        self.copy_button = QPushButton("Copy", self)
        self.copy_button.setToolTip(f"Copy the {what} snippet to the clipboard")
        self.copy_button.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.text.toPlainText()))
        buttons = QVBoxLayout()
        buttons.addWidget(self.copy_button)
        buttons.addStretch(1)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.text, 1)
        layout.addLayout(buttons)

    def show_text(self, text: str) -> None:
        self.text.setPlainText(text)
        self.copy_button.setEnabled(bool(text))


class ConnectPanel(QGroupBox):
    """Empty while nothing serves; ``show_serving`` fills it in."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__("Connect", parent)
        self._url = ""
        self._api_key: Optional[str] = None
        self.url_label = QLabel(_IDLE_URL, self)
        self.url_label.setAccessibleName("Base URL")
        self.url_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.url_label.setToolTip("The address an OpenAI client takes as its base URL")
        self.copy_url_button = QPushButton("Copy", self)
        self.copy_url_button.setToolTip("Copy the base URL to the clipboard")
        self.models_label = QLabel(self)
        self.models_label.setAccessibleName("Model names")
        self.models_label.setWordWrap(True)
        self.models_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.models_label.setToolTip("What a request names in its \"model\" field: the base model, or an adapter "
                                     "by its library name (GET /v1/models lists them)")
        self.model_combo = QComboBox(self)
        self.model_combo.setAccessibleName("Snippet model")
        self.model_combo.setToolTip("The model the snippets below ask")
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model_combo.setMinimumContentsLength(18)
        self.curl_view = SnippetView("curl", self)
        self.python_view = SnippetView("Python", self)
        self.snippets = QTabWidget(self)
        self.snippets.addTab(self.curl_view, "curl")
        self.snippets.addTab(self.python_view, "Python (openai)")

        layout = QGridLayout(self)
        layout.addWidget(QLabel("Base URL:", self), 0, 0)
        layout.addWidget(self.url_label, 0, 1)
        layout.addWidget(self.copy_url_button, 0, 2)
        layout.addWidget(QLabel("Models:", self), 1, 0, Qt.AlignmentFlag.AlignTop)
        layout.addWidget(self.models_label, 1, 1, 1, 2)
        snippet_label = QLabel("&Snippet for:", self)
        snippet_label.setBuddy(self.model_combo)
        layout.addWidget(snippet_label, 2, 0)
        layout.addWidget(self.model_combo, 2, 1, Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(self.snippets, 3, 0, 1, 3)
        layout.setColumnStretch(1, 1)

        self.copy_url_button.clicked.connect(lambda: QGuiApplication.clipboard().setText(self._url))
        self.model_combo.currentTextChanged.connect(self._show_snippets)
        self.show_idle()

    def show_serving(self, url: str, model_names: list[str], api_key: Optional[str]) -> None:
        self._url, self._api_key = url, api_key
        self.url_label.setText(url)
        self.models_label.setText(", ".join(model_names))
        self.model_combo.clear()  # the snippets follow the combo's first item
        self.model_combo.addItems(model_names)
        self.copy_url_button.setEnabled(True)
        self.model_combo.setEnabled(True)

    def show_idle(self) -> None:
        self._url, self._api_key = "", None
        self.url_label.setText(_IDLE_URL)
        self.models_label.setText("—")
        self.model_combo.clear()
        self.copy_url_button.setEnabled(False)
        self.model_combo.setEnabled(False)
        self._show_snippets("")

    def _show_snippets(self, model: str) -> None:
        if not self._url or not model:
            self.curl_view.show_text("")
            self.python_view.show_text("")
            return
        from engine.serve.snippets import curl_snippet, python_snippet

        self.curl_view.show_text(curl_snippet(self._url, model, self._api_key))
        self.python_view.show_text(python_snippet(self._url, model, self._api_key))
