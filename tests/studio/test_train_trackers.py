"""The experiment trackers on the Train page (advanced settings): each checkbox says where its files go
and that nothing is sent unless an address is given, and the choice reaches the run's config and
comes back from it."""

from __future__ import annotations

import json

import pytest

from engine.errors import StudioError
from engine.run.config import RunConfig
from studio.widgets.train_settings import SettingsForm


def test_tracker_choice_and_mlflow_server_reach_the_run_config_and_reopen(train_page, tiny_model_dir, tmp_path):
    from helpers import write_messages_dataset

    page, form = train_page, train_page.form
    page.model_picker.set_ref(str(tiny_model_dir))
    page.dataset_picker.set_path(str(write_messages_dataset(tmp_path / "pirate.jsonl")))
    assert not form.trackers_box.isVisibleTo(page)  # simple mode: the handful of settings that matter most
    assert page.build_config().report_to == []
    form.advanced_radio.click()
    assert form.trackers_box.isVisibleTo(page)
    checks = form.tracker_checks
    # Shown as "Weights & Biases": a single "&" would be taken as a shortcut mark and vanish.
    assert [check.text() for check in checks.values()] == ["TensorBoard", "MLflow", "Weights && Biases"]
    assert "tensorboard --logdir" in checks["tensorboard"].toolTip()
    assert "mlruns" in checks["mlflow"].toolTip() and "offline" in checks["wandb"].toolTip()
    assert "nothing is sent" in form.mlflow_uri_edit.toolTip()
    assert not form.mlflow_uri_edit.isEnabled()  # an address is for MLflow only

    checks["tensorboard"].click()
    checks["mlflow"].click()
    assert form.mlflow_uri_edit.isEnabled()
    form.mlflow_uri_edit.setText(" http://localhost:5000 ")
    config = page.build_config()
    assert (config.report_to, config.mlflow_uri) == (["tensorboard", "mlflow"], "http://localhost:5000")

    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_dict()), encoding="utf-8")
    reopened = SettingsForm()
    reopened.apply(RunConfig.load(path).to_dict())
    assert reopened.values() == form.values()
    assert reopened.mlflow_uri_edit.isEnabled()

    form.mlflow_uri_edit.setText("http://")
    with pytest.raises(StudioError, match="names no server"):
        page.build_config()
    checks["mlflow"].click()  # MLflow off: its address no longer applies
    assert (page.build_config().report_to, page.build_config().mlflow_uri) == (["tensorboard"], None)


def test_the_run_window_links_the_folders_its_trackers_wrote(qtbot):
    from run_folders import completed_run

    from engine.run.rundir import RunDir
    from studio.widgets.run_viewer import RunViewer

    folder = RunDir(completed_run(config={"model": "tiny", "dataset": "/d/pirate.jsonl",
                                          "report_to": ["tensorboard", "wandb"]}))
    folder.tensorboard.mkdir()
    folder.wandb.mkdir()
    viewer = RunViewer([str(folder.path)])
    qtbot.addWidget(viewer)
    with qtbot.waitSignal(viewer.loaded, timeout=10_000):
        pass
    text = viewer.status_label.text()
    assert f'href="file://{folder.tensorboard}">TensorBoard folder</a>' in text
    assert "Weights &amp; Biases folder" in text and "MLflow" not in text
    assert viewer.status_label.openExternalLinks()
    table = viewer.settings_table
    rows = {table.item(row, 0).text(): table.item(row, 1).text() for row in range(table.rowCount())}
    assert rows["Report to"] == "tensorboard, wandb"
