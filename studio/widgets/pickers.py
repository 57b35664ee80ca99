"""Pickers for the three things every page chooses between: a base model, a dataset, an adapter.

They read only metadata (JSON files and folder listings), so refreshing them on
the UI thread stays within a few milliseconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtGui import QPaintEvent
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QPushButton,
    QStyle,
    QStyleOptionComboBox,
    QStylePainter,
    QWidget,
)

_REF_ROLE = Qt.ItemDataRole.UserRole


def _select_data(combo: QComboBox, value: object) -> bool:
    """Select the item carrying ``value``; False when there is none."""
    index = combo.findData(value, _REF_ROLE)
    if index < 0:
        return False
    combo.setCurrentIndex(index)
    return True


# An item's last words that tell it apart from its neighbours (" · step 24 (checkpoint)"): an
# ElidingComboBox never shortens them.
KEPT_END_ROLE = Qt.ItemDataRole.UserRole + 3


class ElidingComboBox(QComboBox):
    """A combo box that shortens a name too long for it in the middle instead of cutting its end:
    names that start alike (a run's adapter and its checkpoints, "20260101-120000-pirate…") keep
    the end that tells them apart, and an item's ``KEPT_END_ROLE`` words ("…· step 24
    (checkpoint)") stay whole. Its tooltip gives the whole name, then the item's own tooltip (a
    path), then what the box is for (``set_about``)."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._about = ""
        self.view().setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.currentIndexChanged.connect(self._update_tooltip)

    def set_about(self, text: str) -> None:
        """What the box is for, the last part of its tooltip."""
        self._about = text
        self._update_tooltip()

    def shown_text(self) -> str:
        """The current item's text as the box paints it: whole where it fits, else shortened (``_elided``)."""
        option = QStyleOptionComboBox()
        self.initStyleOption(option)
        field = self.style().subControlRect(QStyle.ComplexControl.CC_ComboBox, option,
                                            QStyle.SubControl.SC_ComboBoxEditField, self)
        width = field.width() - 2  # the style draws the label 1 px in from either side
        if not option.currentIcon.isNull():
            width -= option.iconSize.width() + 4
        return self._elided(self.currentText(), str(self.currentData(KEPT_END_ROLE) or ""), max(width, 0))

    def _elided(self, text: str, kept_end: str, width: int) -> str:
        """``text`` in ``width`` pixels: whole; else its start shortened in the middle before the
        kept end; else, where even that has no room, "…" and the kept end alone; else shortened
        in the middle as a whole."""
        metrics = self.fontMetrics()
        if metrics.horizontalAdvance(text) <= width:
            return text
        if kept_end and text.endswith(kept_end):
            head_width = width - metrics.horizontalAdvance(kept_end)
            if head_width >= metrics.horizontalAdvance("W…W"):
                return metrics.elidedText(text[:-len(kept_end)], Qt.TextElideMode.ElideMiddle, head_width) + kept_end
            end_only = "…" + kept_end.lstrip(" ·")
            if metrics.horizontalAdvance(end_only) <= width:
                return end_only
        return metrics.elidedText(text, Qt.TextElideMode.ElideMiddle, width)

    def paintEvent(self, event: QPaintEvent) -> None:
        # QComboBox's own painting, with the shortened text in place of the current one.
        painter = QStylePainter(self)
        option = QStyleOptionComboBox()
        self.initStyleOption(option)
        option.currentText = self.shown_text()
        painter.drawComplexControl(QStyle.ComplexControl.CC_ComboBox, option)
        painter.drawControl(QStyle.ControlElement.CE_ComboBoxLabel, option)

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ToolTip:
            self._update_tooltip()  # items may have been refilled with signals blocked since
        return super().event(event)

    def _update_tooltip(self, _index: int = 0) -> None:
        item_tip = self.currentData(Qt.ItemDataRole.ToolTipRole)
        parts = [self.currentText(), item_tip if isinstance(item_tip, str) else "", self._about]
        self.setToolTip("\n\n".join(dict.fromkeys(part for part in parts if part)))


class ModelPicker(ElidingComboBox):
    """The base models the studio knows about, plus any local folder the user pointed at; a name
    too long for the box is shortened in the middle, whole in the tooltip.

    An item's data is the model reference ``engine.models.store.resolve_model`` accepts: the
    name in the model store (``"starter"`` for the starter model) or a folder path.
    """

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(28)
        self.set_about(
            "The base model the adapter is trained on (or chatted with). The starter model is small "
            "enough to train on a CPU; it is converted the first time it is used."
        )
        self._extra_paths: list[str] = []
        self.refresh()

    def refresh(self) -> None:
        from engine.models.store import STARTER, STARTER_NAME, list_models

        keep = self.current_ref()
        self.blockSignals(True)
        self.clear()
        for record in list_models():
            if record.name == STARTER:
                state = "starter" if record.ready else "will be prepared on first use"
                label = f"{STARTER_NAME} ({state})"
            else:
                label = record.name if record.ready else f"{record.name} (files missing)"
            self.addItem(label, record.name)
            self.setItemData(self.count() - 1, record.path or label, Qt.ItemDataRole.ToolTipRole)
        for path in self._extra_paths:
            if self.findData(path, _REF_ROLE) < 0:
                self._add_path_item(path)
        if keep:
            _select_data(self, keep)
        self.blockSignals(False)
        if self.current_ref() != keep:
            self.currentIndexChanged.emit(self.currentIndex())

    def current_ref(self) -> str:
        ref = self.currentData(_REF_ROLE)
        return str(ref) if ref else ""

    def set_ref(self, ref: str) -> None:
        """Select a model by reference; a local path not in the list yet is added to it."""
        if _select_data(self, ref):
            return
        path = str(Path(ref).expanduser())
        if path not in self._extra_paths:
            self._extra_paths.append(path)
            self._add_path_item(path)
        _select_data(self, path)

    def _add_path_item(self, path: str) -> None:
        self.addItem(f"{Path(path).name} (local folder)", path)
        self.setItemData(self.count() - 1, path, Qt.ItemDataRole.ToolTipRole)


class DatasetPicker(QWidget):
    """The bundled sample datasets, plus any file chosen with "Browse…"."""

    changed = Signal(str)

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._custom_paths: list[str] = []
        self.combo = QComboBox(self)
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(24)
        self.combo.setAccessibleName("Dataset")
        self.combo.setToolTip(
            "A dataset file: JSONL, JSON, CSV, TSV, Parquet or plain text, in chat (messages, ShareGPT), "
            "Alpaca, prompt/completion, question/answer or raw-text form (the Data page shows what it "
            "understood). The samples are small and show a visible change quickly."
        )
        self.browse_button = QPushButton("Browse…", self)
        self.browse_button.setToolTip("Choose a dataset file of your own")
        self.browse_button.clicked.connect(self._browse)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.combo, 1)
        layout.addWidget(self.browse_button)
        self.combo.currentIndexChanged.connect(lambda _index: self.changed.emit(self.current_path()))
        self.refresh()

    def refresh(self) -> None:
        from engine.paths import SAMPLE_DATASETS

        keep = self.current_path()
        self.combo.blockSignals(True)
        self.combo.clear()
        samples = sorted(
            p for pattern in ("*.jsonl", "*.json") for p in SAMPLE_DATASETS.glob(pattern) if p.is_file()
        )
        for path in samples:
            self._add(f"{path.stem} (sample)", str(path))
        for path in self._custom_paths:
            self._add(Path(path).name, path)
        if keep:
            _select_data(self.combo, keep)
        self.combo.blockSignals(False)
        if self.current_path() != keep:
            self.changed.emit(self.current_path())

    def current_path(self) -> str:
        path = self.combo.currentData(_REF_ROLE)
        return str(path) if path else ""

    def set_path(self, path: str) -> None:
        """Select a dataset file, adding it to the list when it is not there yet."""
        if not _select_data(self.combo, path):
            self._custom_paths.append(path)
            self._add(Path(path).name, path)
            self.combo.setCurrentIndex(self.combo.count() - 1)

    def _add(self, label: str, path: str) -> None:
        self.combo.addItem(label, path)
        self.combo.setItemData(self.combo.count() - 1, path, Qt.ItemDataRole.ToolTipRole)

    def _browse(self) -> None:
        start = str(Path(self.current_path()).parent) if self.current_path() else str(Path.home())
        path, _filter = QFileDialog.getOpenFileName(
            self, "Choose a dataset", start, "Datasets (*.jsonl *.json *.csv *.tsv *.parquet *.txt);;All files (*)"
        )
        if path:
            self.set_path(path)
