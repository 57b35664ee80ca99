"""Preference tuning on the Train page, as a user meets it: the objective and its settings with
what each means, the methods that cannot learn from pairs greyed out with the config's reason,
an SFT adapter to go on training, and the rewards plotted live from a run's events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lora_adapters import library_adapter
from run_folders import T0, started, write_run

from engine.core.choices import PROMPT_METHODS
from engine.data.preference_store import DEFAULT_SET, append_pair
from engine.run.config import RunConfig
from engine.run.events import EventTail, EventWriter, RunFinished, StepMetrics
from engine.run.rundir import RunDir
from studio.pages.adapters import AdaptersPage
from studio.pages.train.page import TrainPage
from studio.widgets.memory_bar import FITS, TIGHT, TOO_BIG
from studio.widgets.run_viewer import RunViewer
from studio.widgets.train_settings import SettingsForm, setting_tip


def _pick(combo, data) -> None:
    combo.setCurrentIndex(combo.findData(data))


def _pairs() -> Path:
    """The library's preference set with a pair in it, as Compare makes one."""
    return append_pair(DEFAULT_SET, [{"role": "user", "content": "Where is the treasure?"}],
                       "Arr, buried on Skull Island, matey!", "It is on an island.").path


def _shown(page: TrainPage, *widgets) -> list[bool]:
    return [widget.isVisibleTo(page) for widget in widgets]


def test_each_objective_shows_its_own_settings_which_explain_themselves_and_reach_the_config(train_page,
                                                                                            tiny_model_dir, tmp_path):
    page, form = train_page, train_page.form
    page.model_picker.set_ref(str(tiny_model_dir))
    page.dataset_picker.set_path(str(_pairs()))
    form.advanced_radio.click()
    dpo_rows = (form.beta_spin, form.dpo_loss_combo, form.reference_free_check, form.label_smoothing_spin,
                form.sft_weight_spin)
    assert form.objective_combo.currentText() == "supervised (SFT)"
    assert not any(_shown(page, *dpo_rows, form.simpo_gamma_spin, form.desirable_spin))

    _pick(form.objective_combo, "dpo")
    assert all(_shown(page, *dpo_rows)) and not any(_shown(page, form.simpo_gamma_spin, form.desirable_spin))
    for widget, words in ((form.objective_combo, "which of two answers is better"),
                          (form.beta_spin, "How far training may move the model"),
                          (form.dpo_loss_combo, "wrong way round"), (form.reference_free_check, "reference"),
                          (form.simpo_gamma_spin, "margin"), (form.sft_weight_spin, "keeps it writing what you chose"), (form.desirable_spin, "marked good"),
                          (form.undesirable_spin, "marked bad")):
        assert words in widget.toolTip(), widget.accessibleName()
    # Label smoothing belongs to the robust loss: greyed out, in the config's words, until it is picked.
    assert not form.label_smoothing_spin.isEnabled()
    assert "robust loss only" in form.label_smoothing_spin.toolTip()
    _pick(form.dpo_loss_combo, "robust")
    form.label_smoothing_spin.setValue(0.1)
    form.beta_spin.setValue(0.25)
    form.sft_weight_spin.setValue(0.5)
    config = page.build_config()
    assert (config.objective, config.dpo_loss, config.label_smoothing, config.beta, config.sft_weight) == \
        ("dpo", "robust", 0.1, 0.25, 0.5)

    # Prompt methods (and padding-free batches) cannot learn from pairs: greyed out, saying why
    # in RunConfig.validate's own line; and under prompt tuning the preference objectives are.
    model = form.method_combo.model()
    for method in PROMPT_METHODS:
        index = form.method_combo.findData(method)
        assert not model.item(index).isEnabled()
        assert "DPO trains LoRA, DoRA, QLoRA or full fine-tuning" in form.method_combo.itemData(index, 3)
    assert not form.batching_combo.model().item(form.batching_combo.findData("padding_free")).isEnabled()
    _pick(form.objective_combo, "sft")
    _pick(form.method_combo, "prompt")
    assert not form.objective_combo.model().item(form.objective_combo.findData("kto")).isEnabled()
    assert form.objective_combo.model().item(form.objective_combo.findData("sft")).isEnabled()
    _pick(form.method_combo, "lora")

    _pick(form.objective_combo, "simpo")
    assert _shown(page, form.simpo_gamma_spin, form.dpo_loss_combo, form.desirable_spin) == [True, False, False]
    form.simpo_gamma_spin.setValue(1.2)
    config = page.build_config()  # robust DPO's settings do not follow it to SimPO
    assert (config.label_smoothing, config.sft_weight) == (0.0, 0.0)
    _pick(form.objective_combo, "kto")
    assert _shown(page, form.desirable_spin, form.undesirable_spin, form.simpo_gamma_spin) == [True, True, False]
    form.undesirable_spin.setValue(1.5)

    # A run's config.json reopens with the same objective and settings.
    path = tmp_path / "config.json"
    path.write_text(json.dumps(page.build_config().to_dict()), encoding="utf-8")
    reopened = SettingsForm()
    reopened.apply(RunConfig.load(path).to_dict())
    assert reopened.values() == form.values()
    assert (reopened.values()["objective"], reopened.values()["undesirable_weight"]) == ("kto", 1.5)
    assert setting_tip("beta") == form.beta_spin.toolTip()


def test_train_on_my_preferences_goes_on_from_the_sft_adapter_with_its_method_and_rank(train_page, shown,
                                                                                       tiny_model_dir):
    library_adapter(tiny_model_dir, "pirate-sft", rank=8, meta={"method": "dora", "rank": 8, "alpha": 16.0})
    library_adapter(tiny_model_dir, "pirate-dpo", meta={"objective": "dpo", "beta": 0.25})
    page, form = train_page, train_page.form
    page.refresh()
    _pick(form.method_combo, "prefix")  # a method that cannot learn from pairs gives way
    pairs = _pairs()

    assert page.start_preference_setup(str(pairs), "pirate-sft")
    assert form.objective_combo.currentData() == "dpo" and form.adapter_combo.currentText() == "pirate-sft"
    assert page.dataset_picker.current_path() == str(pairs)
    assert page.model_picker.current_ref() == str(tiny_model_dir)  # the model the adapter was trained on
    assert (form.method_combo.currentData(), form.rank_spin.value(), form.alpha_spin.value()) == ("dora", 8, 16.0)
    assert not form.method_combo.isEnabled() and "pirate-sft" in form.rank_spin.toolTip()
    assert "press Start" in page.data_change_label.text()
    form.apply_preset("quick")  # a preset keeps the adapter's shape: training goes on with it
    config = page.build_config()
    assert (config.from_adapter, config.method, config.rank, config.objective) == ("pirate-sft", "dora", 8, "dpo")
    page.update_estimate()
    assert page.memory_bar.verdict in (FITS, TIGHT, TOO_BIG)  # the estimate still reads the config

    _pick(form.adapter_combo, None)  # a new adapter on the base: the method is the user's again
    assert form.method_combo.isEnabled() and page.build_config().from_adapter is None
    dpo = form.adapter_combo.findData("pirate-dpo")
    assert "trained by DPO" in form.adapter_combo.itemData(dpo, 3)

    # The Adapters page says how a preference-trained adapter was made.
    adapters = shown(AdaptersPage())
    adapters.select_name("pirate-dpo")
    details = adapters.details.fields.toPlainText()
    assert "Objective\nDPO\nBeta\n0.25" in details


def _preference_step(number: int) -> StepMetrics:
    return StepMetrics(time=T0 + number, step=number, total_steps=6, epoch=number / 6, loss=0.69 - 0.05 * number,
                       learning_rate=1e-3, rewards_chosen=0.02 * number, rewards_rejected=-0.03 * number,
                       reward_margin=0.05 * number, reward_accuracy=min(1.0, 0.5 + 0.1 * number))


def test_a_preference_run_plots_its_rewards_and_accuracy_live_and_an_sft_run_does_not(qtbot, train_page):
    page, monitor = train_page, train_page.monitor
    events = [started(T0, total=6), *(_preference_step(n) for n in range(1, 4))]
    folder = write_run("20260101-100000-prefs-dpo", events,
                       config={"model": "tiny", "dataset": "/d/prefs.jsonl", "objective": "dpo"})
    tail = EventTail(RunDir(folder).events)
    monitor.clear()  # as at a run's start
    page.controller.events.emit(tail.read_new())  # as the run's runner hands them over
    assert monitor.preference_plots.isVisibleTo(page)
    qtbot.waitUntil(lambda: monitor.reward_plot.point_count("margin") == 3, timeout=2000)
    writer = EventWriter(RunDir(folder).events)
    for number in range(4, 7):
        writer.emit(_preference_step(number))
    writer.close()
    page.controller.events.emit(tail.read_new())
    # Drawn on the plots' timers, as during a run: every curve has every step.
    qtbot.waitUntil(lambda: [monitor.reward_plot.point_count(name) for name in ("chosen", "rejected", "margin")]
                    + [monitor.accuracy_plot.point_count()] == [6] * 4, timeout=2000)
    _x, accuracy = monitor.accuracy_plot.plot_item.listDataItems()[0].getOriginalDataset()
    assert accuracy[0] == pytest.approx(60.0) and accuracy[-1] == pytest.approx(100.0)  # percent of pairs
    low, high = monitor.accuracy_plot.plot_item.viewRange()[1]
    assert low <= 0 and high >= 100  # the share's whole scale, whatever the values

    # The finished run in the run viewer: its rewards replotted from its events.
    viewer = RunViewer([str(folder)])
    qtbot.addWidget(viewer)
    qtbot.waitUntil(lambda: viewer.preference_plots.reward_plot.point_count("chosen") == 6, timeout=10_000)
    assert viewer.preference_plots.accuracy_plot.point_count() == 6
    assert [viewer.tabs.tabText(i) for i in range(viewer.tabs.count())] == ["Curves", "Rewards", "Settings"]

    # An SFT run (the page hides the reward plots as it starts one): the loss as before, no rewards.
    monitor.clear()
    monitor.show_preference(False)
    monitor.show_step(StepMetrics(step=1, total_steps=2, epoch=0.5, loss=2.0, learning_rate=1e-3))
    monitor.show_finished(RunFinished(status="completed", step=1, final_loss=2.0))
    assert not monitor.preference_plots.isVisibleTo(page) and monitor.reward_plot.point_count("chosen") == 0
    assert monitor.loss_plot.point_count() == 1
