"""The Train page driven like a user would: pick the tiny model and a dataset, see the memory
it takes, press Start; pause, stop, retry after running out of memory, train more."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QLineEdit, QSpinBox

from engine.run.events import OutOfMemory
from engine.jobs.summary import list_runs
from engine.adapters.library import list_adapters
from engine.paths import runs_dir
from helpers import write_messages_dataset
from studio.pages.train.page import TrainPage
from studio.widgets.run_dialogs import ExportRunDialog, ModulePickerDialog

RUN_TIMEOUT_MS = 120_000


@pytest.fixture
def page(train_page) -> TrainPage:
    return train_page


@pytest.fixture
def dataset(tmp_path) -> Path:
    return write_messages_dataset(tmp_path / "pirate-chat.jsonl", rows=8)


def _configure(page: TrainPage, model_dir: Path, dataset: Path, steps: int) -> None:
    page.model_picker.set_ref(str(model_dir))
    page.dataset_picker.set_path(str(dataset))
    form = page.form
    form.rank_spin.setValue(4)
    form.alpha_spin.setValue(8)
    form.lr_spin.setValue(1e-2)
    form.steps_spin.setValue(steps)
    form.batch_spin.setValue(2)
    form.max_length_spin.setValue(64)


def _start_and_finish(qtbot, page: TrainPage):
    with qtbot.waitSignal(page.runFinished, timeout=RUN_TIMEOUT_MS) as finished:
        qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)
    return finished.args[0]


def test_defaults_are_the_quick_try_preset_for_a_cpu_demo(page):
    form = page.form
    assert form.preset_combo.currentText() == "Quick try" and form.simple
    assert form.method_combo.currentData() == "lora"
    assert (form.rank_spin.value(), form.alpha_spin.value()) == (16, 32)
    assert form.lr_spin.value() == pytest.approx(1e-3) and form.lr_spin.text() == "0.001"
    assert form.by_steps_radio.isChecked() and form.steps_spin.value() == 60
    assert form.batch_spin.value() == 4 and form.max_length_spin.value() == 256
    assert page.start_button.isEnabled()
    assert not page.pause_button.isEnabled() and not page.stop_button.isEnabled()
    assert not page.resume_button.isEnabled() and not page.more_button.isEnabled()


def test_every_setting_explains_itself(page):
    kinds = (QSpinBox, QDoubleSpinBox, QComboBox, QCheckBox, QLineEdit)
    widgets = [w for kind in kinds for w in page.form.findChildren(kind)
               if not isinstance(w.parent(), (QSpinBox, QDoubleSpinBox))]  # a spin box's own line edit is part of it
    assert len(widgets) > 30
    for widget in widgets:
        assert len(widget.toolTip()) > 30, widget.accessibleName() or widget.objectName()


def test_simple_mode_shows_the_few_settings_that_matter_and_advanced_shows_all(page):
    form = page.form
    assert form.rank_spin.isVisibleTo(page) and not form.alpha_spin.isVisibleTo(page)
    assert not form.optimizer_combo.isVisibleTo(page) and not form.checkpointing_check.isVisibleTo(page)
    form.advanced_radio.click()
    assert form.alpha_spin.isVisibleTo(page) and form.optimizer_combo.isVisibleTo(page)
    assert form.checkpointing_check.isVisibleTo(page) and form.targets_combo.isVisibleTo(page)
    # Rows follow the method: QLoRA's quantisation, prompt tuning's virtual tokens, no rank.
    form.method_combo.setCurrentIndex(form.method_combo.findData("qlora"))
    assert form.quant_combo.isVisibleTo(page) and form.double_quant_check.isVisibleTo(page)
    form.method_combo.setCurrentIndex(form.method_combo.findData("prompt"))
    assert form.virtual_spin.isVisibleTo(page) and not form.rank_spin.isVisibleTo(page)
    form.prompt_init_combo.setCurrentIndex(form.prompt_init_combo.findData("text"))
    assert form.prompt_text_edit.isVisibleTo(page)


def test_presets_set_their_values_and_a_change_makes_them_custom(page):
    form = page.form
    form.apply_preset("best")
    values = form.values()
    assert (values["rank"], values["use_rslora"], values["lr_scheduler"], values["early_stopping_patience"]) == \
        (64, True, "cosine", 3)
    assert values["max_steps"] is None and values["epochs"] == 3.0
    assert form.preset_combo.currentText() == "Best quality"
    form.rank_spin.setValue(32)
    assert form.preset_combo.currentText() == "Custom"


def test_the_memory_bar_follows_every_setting_and_says_whether_it_fits(page, tiny_model_dir):
    page.model_picker.set_ref(str(tiny_model_dir))
    page.update_estimate()
    small = page._estimate.device_bytes
    assert page.memory_bar.verdict == "fits" and "free on" in page.memory_bar.summary.text()
    legend = page.memory_bar.legend.visible_text()
    assert "activations" in legend and "optimizer states" in legend and "free memory (the line)" in legend
    # Every entry, the black line's among them, and the verdict say what they mean, in words of their own.
    shown = [entry for entry in page.memory_bar.legend.entries.values() if entry.isVisible()]
    # A LoRA step peaks as its backward pass begins, before any gradient exists (the Trainer frees
    # them after every step): the legend lists what the peak holds, and the free line.
    assert page._estimate.items["gradients"] == 0 and "gradients" not in legend
    assert len(shown) >= 6
    for widget in (*shown, page.memory_bar.badge, page.memory_bar.summary):
        assert len(widget.toolTip()) > 40 and widget.toolTip() != widget.text()
    assert "batch size" in page.memory_bar.legend.entries["activations"].toolTip()
    assert "upright line" in page.memory_bar.legend.entries["free"].toolTip()
    page.form.batch_spin.setValue(64)
    page.form.max_length_spin.setValue(4096)
    page.update_estimate()
    assert page._estimate.device_bytes > 10 * small
    page.form.method_combo.setCurrentIndex(page.form.method_combo.findData("full"))
    page.update_estimate()
    assert page._estimate.items["optimizer_states"] == 8 * page._estimate.total_params
    # Far more than this machine has: the badge says so.
    page.form.batch_spin.setValue(4096)
    page.form.max_length_spin.setValue(131_072)
    page.update_estimate()
    assert page.memory_bar.verdict == "does not fit" and page.memory_bar.badge.text() == "does not fit"


def test_fit_to_my_memory_applies_a_plan_that_fits_and_explains_it(qtbot, page, tiny_model_dir, dataset):
    page.model_picker.set_ref(str(tiny_model_dir))
    page.dataset_picker.set_path(str(dataset))
    page._device.free_bytes = 64 << 20  # as if only 64 MiB were free
    page.form.batch_spin.setValue(512)
    page.form.max_length_spin.setValue(8192)
    page.update_estimate()
    assert page.memory_bar.verdict == "does not fit"
    with qtbot.waitSignal(page.form.changed, timeout=60_000):
        qtbot.mouseClick(page.memory_bar.fit_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page._task is None, timeout=60_000)
    page.update_estimate()
    assert page.memory_bar.verdict == "fits"
    assert page.form.max_length_spin.value() < 8192
    assert "Max length" in page.memory_bar.explanations.text() and page.memory_bar.explanations.isVisible()


def test_training_run_completes_lands_in_the_library_and_can_train_more(qtbot, page, tiny_model_dir, dataset):
    _configure(page, tiny_model_dir, dataset, steps=4)
    page.form.name_edit.setText("tiny-pirate")
    saved: list[str] = []
    page.adapterSaved.connect(saved.append)

    with qtbot.waitSignal(page.runFinished, timeout=RUN_TIMEOUT_MS) as finished:
        qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)
        assert not page.start_button.isEnabled()
        qtbot.waitUntil(lambda: page.stop_button.isEnabled(), timeout=RUN_TIMEOUT_MS)
        assert not page.form.isEnabled()

    event = finished.args[0]
    assert event.status == "completed", event.error
    assert page.loss_plot.point_count() >= 1
    assert page.progress_bar.maximum() == 4 and page.progress_bar.value() == 4
    assert page.progress_bar.text().startswith("step 4 / 4")
    assert page.memory_plot.reference is not None  # the predicted peak, drawn against the curve
    library = {record.path: record for record in list_adapters()}
    assert event.adapter in library and library[event.adapter].name == "tiny-pirate"
    assert saved == [event.adapter]
    assert page.error_label.isHidden()
    assert "Finished at step 4" in page.log_view.toPlainText()
    assert page.start_button.isEnabled() and not page.stop_button.isEnabled()
    assert page.more_button.isEnabled() and not page.resume_button.isEnabled()

    with qtbot.waitSignal(page.runFinished, timeout=RUN_TIMEOUT_MS) as more:
        page.train_more(page._last_run, steps=2)
    assert more.args[0].status == "completed" and more.args[0].step == 6
    assert sorted(a.name for a in list_adapters()) == ["tiny-pirate", "tiny-pirate-2"]


def test_missing_dataset_shows_an_error_and_starts_nothing(qtbot, page, tiny_model_dir, tmp_path):
    _configure(page, tiny_model_dir, tmp_path / "no-such-file.jsonl", steps=4)

    qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)

    assert page.error_label.isVisible()
    assert "Dataset file not found" in page.error_label.text()
    assert "Dataset file not found" in page.log_view.toPlainText()
    assert not page.run_active and page.start_button.isEnabled()
    assert list_adapters() == []
    assert list(runs_dir().iterdir()) == []


def test_a_choice_this_machine_cannot_run_is_refused_before_anything_starts(qtbot, page, tiny_model_dir, dataset):
    _configure(page, tiny_model_dir, dataset, steps=4)
    page.form.precision_combo.setCurrentIndex(page.form.precision_combo.findData("fp16"))
    with qtbot.waitSignal(page.runStateChanged, timeout=RUN_TIMEOUT_MS, check_params_cb=lambda s: s == "idle"):
        qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)
    assert "fp16 mixed precision needs a CUDA GPU" in page.error_label.text()
    assert not page.run_active and page.start_button.isEnabled() and page.form.isEnabled()
    assert list(runs_dir().iterdir()) == []


def test_invalid_setting_is_reported_in_the_page(qtbot, page, tiny_model_dir, dataset):
    _configure(page, tiny_model_dir, dataset, steps=4)
    page.form.name_edit.setText("no spaces allowed")

    qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)

    assert page.error_label.isVisible()
    assert "adapter name" in page.error_label.text()
    assert not page.run_active


def test_failed_run_shows_its_error(qtbot, page, tiny_model_dir, tmp_path, monkeypatch):
    from engine.data import trainable

    # The bad row lies past the rows the parent reads before the start: the child finds it.
    monkeypatch.setattr(trainable, "STOP_SCAN_ROWS", 1)
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "arr"}]}\n'
                       "this is not json\n", encoding="utf-8")
    _configure(page, tiny_model_dir, garbage, steps=4)
    page.bad_rows_combo.setCurrentIndex(page.bad_rows_combo.findData("stop"))

    event = _start_and_finish(qtbot, page)

    assert event.status == "failed"
    assert page.error_label.isVisible()
    assert page.error_label.text().startswith("Training failed: 1 of 2 rows are bad")
    assert list_adapters() == []
    assert page.start_button.isEnabled()


def test_pause_resume_stop_and_resume_from_the_checkpoint(qtbot, page, tiny_model_dir, dataset):
    _configure(page, tiny_model_dir, dataset, steps=5000)

    # Wait for real progress, so the pause interrupts a run that is training.
    with qtbot.waitSignal(page.progressChanged, timeout=RUN_TIMEOUT_MS,
                          check_params_cb=lambda text: text.startswith("step ") and not text.startswith("step 0 ")):
        qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)

    with qtbot.waitSignal(page.runStateChanged, timeout=RUN_TIMEOUT_MS, check_params_cb=lambda s: s == "paused"):
        qtbot.mouseClick(page.pause_button, Qt.MouseButton.LeftButton)
        assert page.pause_button.text() == "Pausing…"
    assert page.pause_button.text() == "Resume" and page.pause_button.isEnabled()
    assert "Paused at step" in page.log_view.toPlainText()

    with qtbot.waitSignal(page.runStateChanged, timeout=RUN_TIMEOUT_MS, check_params_cb=lambda s: s == "running"):
        qtbot.mouseClick(page.pause_button, Qt.MouseButton.LeftButton)
    assert page.pause_button.text() == "Pause"

    with qtbot.waitSignal(page.runFinished, timeout=RUN_TIMEOUT_MS) as finished:
        qtbot.mouseClick(page.stop_button, Qt.MouseButton.LeftButton)
        assert page.stop_button.text() == "Stopping…"

    event = finished.args[0]
    assert event.status == "stopped", event.error
    assert 0 < event.step < 5000
    assert "Stopped at step" in page.log_view.toPlainText()
    assert page.start_button.isEnabled() and not page.pause_button.isEnabled()
    assert page.resume_button.isEnabled()  # a stopped run keeps its checkpoint

    config = json.loads((page._last_run / "config.json").read_text())
    config["max_steps"] = event.step + 1
    (page._last_run / "config.json").write_text(json.dumps(config))
    with qtbot.waitSignal(page.runFinished, timeout=RUN_TIMEOUT_MS) as resumed:
        qtbot.mouseClick(page.resume_button, Qt.MouseButton.LeftButton)
    assert resumed.args[0].status == "completed" and resumed.args[0].step == event.step + 1


def test_stop_and_discard_keeps_nothing(qtbot, page, tiny_model_dir, dataset):
    _configure(page, tiny_model_dir, dataset, steps=5000)
    with qtbot.waitSignal(page.progressChanged, timeout=RUN_TIMEOUT_MS,
                          check_params_cb=lambda text: text.startswith("step ") and not text.startswith("step 0 ")):
        qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)
    with qtbot.waitSignal(page.runFinished, timeout=RUN_TIMEOUT_MS) as finished:
        page.discard_action.trigger()
    assert finished.args[0].status == "stopped" and finished.args[0].adapter is None
    assert list_adapters() == []
    [summary] = list_runs()
    assert summary.checkpoint_step == 0 and not page.resume_button.isEnabled()


def test_out_of_memory_offers_the_plan_and_apply_and_retry_starts_with_it(qtbot, page, tiny_model_dir, dataset):
    _configure(page, tiny_model_dir, dataset, steps=3)
    page.form.batch_spin.setValue(8)
    plan = {"method": "lora", "rank": 4, "targets": "all-linear", "batch": 2, "seq": 64, "grad_accum": 4,
            "grad_checkpointing": True, "optimizer": "adamw_8bit", "precision": "fp32"}
    page._on_events([OutOfMemory(step=0, device="cpu", measured_peak_bytes=3 << 30, device_total_bytes=4 << 30,
                                 plan=plan, explanations=["Micro-batch 2 with 4 accumulation steps keeps 8."])])
    assert page.oom_panel.isVisibleTo(page) and page.apply_retry_button.isVisibleTo(page)
    assert "Out of memory at step 0" in page.oom_label.text() and "3.0 GiB" in page.oom_label.text()

    with qtbot.waitSignal(page.runFinished, timeout=RUN_TIMEOUT_MS) as finished:
        qtbot.mouseClick(page.apply_retry_button, Qt.MouseButton.LeftButton)
        values = page.form.values()
        assert (values["batch_size"], values["grad_accum"], values["grad_checkpointing"], values["optimizer"]) == \
            (2, 4, True, "adamw_8bit")
    assert finished.args[0].status == "completed", finished.args[0].error
    config = json.loads((page._last_run / "config.json").read_text())
    assert (config["batch_size"], config["grad_accum"], config["grad_checkpointing"]) == (2, 4, True)


def test_the_module_picker_lists_the_models_own_linear_layers(qtbot, tiny_model_dir):
    from engine.train.methods import model_module_names

    names = model_module_names(tiny_model_dir)
    assert names == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    dialog = ModulePickerDialog(names, ["q_proj", "v_proj"])
    qtbot.addWidget(dialog)
    dialog.boxes["down_proj"].setChecked(True)
    assert dialog.chosen() == ["q_proj", "v_proj", "down_proj"]


def test_run_elsewhere_writes_a_run_folder_and_its_command_lines(qtbot, page, tiny_model_dir, dataset, tmp_path):
    _configure(page, tiny_model_dir, dataset, steps=4)
    dialog = ExportRunDialog(page.build_config(), page)
    qtbot.addWidget(dialog)
    dialog.gpus_spin.setValue(4)
    assert "launch-nodes.sh" not in dialog.commands.toPlainText()  # one machine: nothing to start on others
    dialog.nodes_spin.setValue(2)
    assert "NODE_RANK=<0 to 1> RUN_DIR/launch-nodes.sh" in dialog.commands.toPlainText()  # shown as it changes
    dialog.export_to(tmp_path / "elsewhere")
    folder = tmp_path / "elsewhere"
    config = json.loads((folder / "config.json").read_text())
    assert config["model"] == str(tiny_model_dir) and config["max_steps"] == 4
    text = dialog.commands.toPlainText()
    assert f"torchrun --standalone --nproc_per_node 4 -m engine.train {folder}" in text
    assert "accelerate launch --num_processes 4" in text and (folder / "launch.sh").is_file()
    assert f"NODE_RANK=<0 to 1> {folder / 'launch-nodes.sh'}" in text and f"sbatch {folder / 'train.sbatch'}" in text
    assert "--nnodes 2 --nproc_per_node 4" in (folder / "launch-nodes.sh").read_text()
    assert "#SBATCH --nodes=2" in (folder / "train.sbatch").read_text()
    assert dialog.status.text().endswith("launch.sh, launch-nodes.sh and train.sbatch")
