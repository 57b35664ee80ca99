"""Small dialogs of the Train page: pick target modules, train a run further, export a run."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from engine.run.config import RunConfig
from engine.errors import StudioError
from engine.jobs.export import SCRIPTS, export_run, launch_commands


class ModulePickerDialog(QDialog):
    """A checkbox per linear layer name of the model (q_proj, gate_proj...)."""

    def __init__(self, names: list[str], chosen: list[str], parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Target modules")
        intro = QLabel("LoRA adapters go beside the checked layers of every block. Attention layers change how "
                       "the model reads its context; MLP layers (gate, up, down) hold most of what it knows.")
        intro.setWordWrap(True)
        grid = QGridLayout()
        self.boxes: dict[str, QCheckBox] = {}
        for index, name in enumerate(names):
            box = QCheckBox(name)
            box.setChecked(name in chosen)
            box.toggled.connect(self._update_ok)
            self.boxes[name] = box
            grid.addWidget(box, index // 3, index % 3)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(grid)
        layout.addWidget(self.buttons)
        self._update_ok()

    def chosen(self) -> list[str]:
        return [name for name, box in self.boxes.items() if box.isChecked()]

    def _update_ok(self) -> None:
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(bool(self.chosen()))


class TrainMoreDialog(QDialog):
    """How much further to train a finished run: more steps or more epochs."""

    def __init__(self, run_name: str, at_step: int, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Train more")
        intro = QLabel(f"Continue <b>{run_name}</b> from step {at_step} with its optimizer state. The learning-rate "
                       "schedule runs again over the new steps, and the result is saved as a new adapter beside "
                       "the first.")
        intro.setWordWrap(True)
        self.steps_radio = QRadioButton("More steps")
        self.epochs_radio = QRadioButton("More epochs")
        self.steps_radio.setChecked(True)
        group = QButtonGroup(self)
        group.addButton(self.steps_radio)
        group.addButton(self.epochs_radio)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 10_000_000)
        self.steps_spin.setValue(max(10, at_step // 2))
        self.steps_spin.setAccessibleName("More steps")
        self.epochs_spin = QDoubleSpinBox()
        self.epochs_spin.setRange(0.1, 100)
        self.epochs_spin.setDecimals(1)
        self.epochs_spin.setValue(1.0)
        self.epochs_spin.setAccessibleName("More epochs")
        row = QHBoxLayout()
        for widget in (self.steps_radio, self.steps_spin, self.epochs_radio, self.epochs_spin):
            row.addWidget(widget)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Train")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(row)
        layout.addWidget(buttons)

    def amount(self) -> dict:
        """``{"steps": N}`` or ``{"epochs": E}``, as ``TrainingJob.train_more`` takes them."""
        if self.steps_radio.isChecked():
            return {"steps": self.steps_spin.value()}
        return {"epochs": self.epochs_spin.value()}


class ExportRunDialog(QDialog):
    """The command lines that run these settings elsewhere, and a button to write the run folder."""

    def __init__(self, config: RunConfig, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Run elsewhere")
        self._config = config
        self.exported: Optional[Path] = None
        intro = QLabel("The same run runs headless, on this machine or on a bigger one: write its folder "
                       "(config.json and launch.sh), copy it there with the dataset, and start it with one of "
                       "these lines. Progress goes to events.jsonl in the folder. On several machines the "
                       "folder must be on a file system they all mount: start launch-nodes.sh on each, or "
                       "submit train.sbatch to Slurm.")
        intro.setWordWrap(True)
        self.nodes_spin = QSpinBox()
        self.nodes_spin.setRange(1, 1024)
        self.nodes_spin.setPrefix("Nodes: ")
        self.nodes_spin.setAccessibleName("Nodes")
        self.nodes_spin.setToolTip("Machines that train the run together (launch-nodes.sh, train.sbatch)")
        self.gpus_spin = QSpinBox()
        self.gpus_spin.setRange(1, 64)
        self.gpus_spin.setPrefix("GPUs per node: ")
        self.gpus_spin.setAccessibleName("GPUs per node")
        self.commands = QPlainTextEdit()
        self.commands.setReadOnly(True)
        self.commands.setAccessibleName("Command lines")
        self.nodes_spin.valueChanged.connect(self._show_commands)
        self.gpus_spin.valueChanged.connect(self._show_commands)
        copy = QPushButton("Copy")
        copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.commands.toPlainText()))
        self.save_button = QPushButton("Write run folder…")
        self.save_button.clicked.connect(self._choose_folder)
        self.status = QLabel()
        self.status.setWordWrap(True)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.reject)
        row = QHBoxLayout()
        row.addWidget(self.nodes_spin)
        row.addWidget(self.gpus_spin)
        row.addStretch(1)
        row.addWidget(copy)
        row.addWidget(self.save_button)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(row)
        layout.addWidget(self.commands)
        layout.addWidget(self.status)
        layout.addWidget(close)
        self.resize(720, 380)
        self._folder = Path("RUN_DIR")
        self._show_commands()

    def _show_commands(self) -> None:
        lines = launch_commands(self._folder, self.gpus_spin.value(), self.nodes_spin.value())
        self.commands.setPlainText("\n".join(f"# {label}\n{line}" for label, line in lines.items()))

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "An empty folder for the run")
        if folder:
            self.export_to(Path(folder))

    def export_to(self, folder: Path) -> None:
        try:
            self.exported = export_run(self._config, folder, self.gpus_spin.value(), self.nodes_spin.value())
        except (StudioError, OSError) as exc:
            self.status.setText(f"Could not write the run folder: {exc}")
            return
        self._folder = self.exported.resolve()
        self._show_commands()
        self.status.setText(f"Written: {self.exported / 'config.json'}, {', '.join(SCRIPTS[:-1])} and {SCRIPTS[-1]}")
