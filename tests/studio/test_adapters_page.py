"""The Adapters page and its dialogs, on real adapters of the tiny model and the real engine."""

from __future__ import annotations

import json
import re
import time
import zipfile
from pathlib import Path

import pytest
from eval_documents import candidate, results_document
from lora_adapters import empty_safetensors, library_adapter
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from engine.adapters.library import list_adapters, read_adapter_meta
from engine.adapters.trash import list_trash
from engine.adapters.combine import preview_dir
from engine.eval.results import store_results
from engine.models.store import list_models
from engine.paths import adapters_dir
from studio.pages.adapters import COLUMNS, AdaptersPage
from studio.widgets.adapter_dialogs import CombineDialog, GgufDialog, MergeDialog

TASK_TIMEOUT_MS = 120_000


@pytest.fixture
def page(shown) -> AdaptersPage:
    return lambda: shown(AdaptersPage())


def _cell(page: AdaptersPage, name: str, column: str) -> str:
    row = [page.table.item(r, 0).text() for r in range(page.table.rowCount())].index(name)
    return page.table.item(row, COLUMNS.index(column)).text()


def _wait(qtbot, task) -> None:
    assert task is not None, "the page refused to start the task"
    with qtbot.waitSignal(task.finished, timeout=TASK_TIMEOUT_MS):
        pass


def _finish(qtbot, task) -> None:
    if task.running:
        _wait(qtbot, task)


def test_table_search_sort_and_details(page, tiny_model_dir):
    library_adapter(tiny_model_dir, "pirate", meta={"eval_history": [[2, 1.8], [3, 1.5]], "tags": ["sea"],
                                                    "final_eval_loss": 1.5})
    library_adapter(tiny_model_dir, "poet", meta={"final_loss": 0.9, "dataset": "/data/poems.jsonl",
                                                  "final_eval_loss": 1.1})
    shown = page()
    assert sorted(shown.visible_names()) == ["pirate", "poet"]
    assert _cell(shown, "pirate", "Eval loss") == "1.5000" and _cell(shown, "pirate", "Tags") == "sea"

    shown.table.sortByColumn(COLUMNS.index("Eval loss"), Qt.SortOrder.AscendingOrder)
    assert shown.visible_names() == ["poet", "pirate"]
    shown.search_edit.setText("poems")
    assert shown.visible_names() == ["poet"]
    shown.search_edit.setText("SEA")
    assert shown.visible_names() == ["pirate"]
    shown.search_edit.clear()

    shown.select_name("pirate")
    details = shown.details.fields.toPlainText()
    assert "Made from" in details and "Settings" in details
    # Fields by their names, never by their keys in studio.json; each name's tooltip says what it is for.
    meta = read_adapter_meta(adapters_dir() / "pirate")
    assert not [key for key in meta if "_" in key and key in details]
    assert "Base model fingerprint" in details and "Final evaluation loss" in details
    label = shown.details.fields.document().find("Base model fingerprint")
    assert "warns when that is not the same model" in label.charFormat().toolTip()
    assert shown.details.loss_plot.point_count("train") == 3 and shown.details.loss_plot.point_count("eval") == 2
    shown.details.tags_edit.setText("sea, fun,  sea")
    shown.details.notes_edit.setPlainText("Arr.")
    shown.details.save_button.click()
    assert read_adapter_meta(adapters_dir() / "pirate")["tags"] == ["sea", "fun"]
    assert read_adapter_meta(adapters_dir() / "pirate")["notes"] == "Arr."
    assert _cell(shown, "pirate", "Tags") == "sea, fun" and shown.selected_record().name == "pirate"


def test_evaluation_column_shows_and_sorts_by_the_newest_score(page, tiny_model_dir):
    pirate, poet = library_adapter(tiny_model_dir, "pirate"), library_adapter(tiny_model_dir, "poet")
    library_adapter(tiny_model_dir, "untested")
    base = candidate("base", None, {"rouge_l": 0.21})
    store_results(results_document([base, candidate("pirate", pirate, {"rouge_l": 0.58}),
                                    candidate("poet", poet, {"rouge_l": 0.34})]))
    shown = page()
    assert _cell(shown, "pirate", "Evaluation") == "ROUGE-L 0.58 (30 rows)"
    assert _cell(shown, "untested", "Evaluation") == ""
    shown.table.sortByColumn(COLUMNS.index("Evaluation"), Qt.SortOrder.DescendingOrder)
    assert shown.visible_names() == ["pirate", "poet", "untested"]  # by the number, not the text
    row = shown.visible_names().index("pirate")
    tip = shown.table.item(row, COLUMNS.index("Evaluation")).toolTip()
    assert "pirate_persona.jsonl on 30 rows" in tip and "0.210 → 0.580" in tip
    shown.select_name("pirate")
    details = shown.details.fields.toPlainText()
    assert "Evaluations" in details and "pirate_persona.jsonl" in details and "0.210 → 0.580" in details


@pytest.mark.alone
def test_five_hundred_adapters_fill_the_page_in_under_a_second(page):
    for index in range(500):
        folder = adapters_dir() / f"adapter-{index:03}"
        folder.mkdir()
        (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
        empty_safetensors(folder / "adapter_model.safetensors")
        (folder / "studio.json").write_text(json.dumps({"final_loss": index / 100, "tags": ["bulk"],
                                                        "loss_history": [[s, 1.0] for s in range(100)]}))
    shown = page()
    started = time.perf_counter()
    shown.refresh()
    elapsed = time.perf_counter() - started
    assert shown.table.rowCount() == 500
    assert elapsed < 1.0, f"refreshing 500 adapters took {elapsed:.2f} s"


def test_rename_delete_and_undo(page, tiny_model_dir, monkeypatch):
    library_adapter(tiny_model_dir, "pirate")
    shown = page()
    shown.select_name("pirate")
    shown.rename_selected("captain")
    assert shown.visible_names() == ["captain"] and shown.selected_record().name == "captain"
    shown.rename_selected("bad name!")
    assert shown.error_label.isVisible() and "may only use letters" in shown.error_label.text()

    shown.delete_selected()
    assert shown.visible_names() == [] and shown.undo_bar.isVisible()
    assert "captain" in shown.undo_label.text() and shown.empty_trash_button.isEnabled()
    shown.undo_button.click()
    assert shown.visible_names() == ["captain"] and not shown.undo_bar.isVisible()
    assert shown.selected_record().name == "captain" and list_trash() == []

    shown.delete_selected()
    monkeypatch.setattr(QMessageBox, "question", lambda *args, **kwargs: QMessageBox.StandardButton.Yes)
    shown.empty_trash_button.click()
    assert list_trash() == [] and not shown.empty_trash_button.isEnabled() and not shown.undo_bar.isVisible()


def test_damaged_adapter_is_listed_but_cannot_be_merged_or_exported(page):
    folder = adapters_dir() / "half-copied"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    (folder / "adapter_model.safetensors").write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{\"a\": {\"dtype\"")
    odd = adapters_dir() / "odd"
    odd.mkdir()
    (odd / "adapter_config.json").write_text("[]")
    empty_safetensors(odd / "adapter_model.safetensors")
    (odd / "studio.json").write_text(json.dumps({"created": 5, "loss_history": [[1, "x"], "y"], "steps": []}))
    shown = page()
    shown.select_name("odd")
    assert _cell(shown, "odd", "Status").startswith("damaged:") and "Damaged:" in shown.details.fields.toPlainText()
    shown.select_name("half-copied")
    assert _cell(shown, "half-copied", "Status").startswith("damaged:")
    assert not shown.merge_button.isEnabled() and not shown.gguf_button.isEnabled()
    assert not shown.export_button.isEnabled() and shown.delete_button.isEnabled()
    assert "Damaged:" in shown.details.fields.toPlainText()


def test_export_and_import_zip_and_a_refused_zip(page, qtbot, tiny_model_dir, tmp_path):
    library_adapter(tiny_model_dir, "pirate")
    shown = page()
    shown.select_name("pirate")
    _wait(qtbot, shown.export_to(str(tmp_path / "pirate.zip")))
    assert zipfile.is_zipfile(tmp_path / "pirate.zip") and "Wrote" in shown.status_label.text()

    _wait(qtbot, shown.import_path(str(tmp_path / "pirate.zip")))
    assert sorted(shown.visible_names()) == ["pirate", "pirate-2"]
    assert shown.selected_record().name == "pirate-2"

    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as archive:
        archive.writestr("../../escape.txt", "x")
    _wait(qtbot, shown.import_path(str(tmp_path / "evil.zip")))
    assert "points outside its folder" in shown.error_label.text() and shown.error_label.isVisible()
    assert sorted(r.name for r in list_adapters()) == ["pirate", "pirate-2"]


def test_merge_dialog_merges_checks_and_adds_to_the_model_store(qtbot, tiny_model_dir, page):
    library_adapter(tiny_model_dir, "pirate")
    shown = page()
    shown.select_name("pirate")
    dialog = shown.merge_dialog()
    assert isinstance(dialog, MergeDialog)
    qtbot.addWidget(dialog)
    with qtbot.waitSignal(shown.modelsChanged, timeout=TASK_TIMEOUT_MS):
        task = dialog.merge()
    _finish(qtbot, task)
    text = dialog.result_view.toPlainText()
    assert "Merged and checked" in text
    # Each number with a plain name and what value is good.
    assert "Largest drift from base+adapter" in text and "Near 0 means the merge kept the adapter exactly" in text
    assert "Average change in word choices" in text and "What the adapter itself changes" in text
    assert "Added to the model store as pirate-merged" in text
    assert "pirate-merged" in [model.name for model in list_models()]


def test_gguf_dialog_exports_q4_k_m_with_llama_cpps_agreement_and_offers_the_file_to_chat(qtbot, tiny_model_dir, page,
                                                                                          studio_home):
    library_adapter(tiny_model_dir, "pirate")
    shown = page()
    shown.select_name("pirate")
    dialog = shown.gguf_dialog()
    assert isinstance(dialog, GgufDialog)
    qtbot.addWidget(dialog)
    # By default into the app's own folder, as merged models are, and the dialog says so.
    folder = studio_home / "gguf"
    assert dialog.output_edit.text() == str(folder / "pirate.gguf")
    assert f"LoRA Studio's own folder, {folder}" in dialog.where_label.text() and dialog.where_label.isVisibleTo(dialog)
    # What users run, Q4_K_M first and chosen, with what it makes of this model; a GGUF LoRA only floats and Q8_0.
    types = lambda: [dialog.quant_combo.itemData(i) for i in range(dialog.quant_combo.count())]  # noqa: E731
    assert types() == ["q4_k_m", "q5_k_m", "q6_k", "q8_0", "f16", "bf16", "f32"]
    assert dialog.quant_combo.currentData() == "q4_k_m"
    assert re.fullmatch(r"Q4_K_M: 4.9 bits a weight, about [\d.]+ \S+ for the model's [\d,]+ weights\.",
                        dialog.size_label.text()), dialog.size_label.text()
    dialog.lora_only.setChecked(True)
    assert types() == ["f16", "bf16", "q8_0", "f32"] and "the adapter's own weights only" in dialog.size_label.text()
    dialog.lora_only.setChecked(False)
    dialog.quant_combo.setCurrentIndex(0)
    assert not dialog.chat_button.isVisibleTo(dialog)

    _wait(qtbot, dialog.export())
    text = dialog.result_view.toPlainText()
    assert re.search(r"Wrote GGUF model \S+pirate\.gguf \(Q4_K_M, ", text), text
    assert "within float tolerance" in text and "largest drift from base+adapter" in text
    # llama.cpp loaded the file and answered as the merged model does, and the dialog says so in figures:
    # its agreement, the tensor types it wrote, and where the K-quant fell back (the tiny model's rows,
    # 64 and 128, are not multiples of 256).
    assert re.search(r"llama\.cpp [\d.]+ against the Hugging Face model, \d+ probe prompts \(\d+ positions\): "
                     r"within the bounds for its type", text), text
    assert re.search(r"same most likely next token: [\d.]+% of positions; .*decided", text), text
    for figure in ("mean KL divergence:", "greedy answer: the first", "tensor types:", "which q4_K needs) were stored as"):
        assert figure in text, figure
    assert "A K-quant stores weights in blocks of 256" in text  # what a fallback means, in plain words
    assert (folder / "pirate.gguf").is_file() and (folder / "pirate.Modelfile").is_file()
    assert dialog.chat_button.isVisibleTo(dialog)
    with qtbot.waitSignal(shown.chatWithFileRequested) as chat:
        dialog.chat_button.click()
    assert chat.args == [str(folder / "pirate.gguf"), "pirate"]


def test_combine_dialog_tries_the_combination_before_keeping_it(qtbot, tiny_model_dir, page):
    library_adapter(tiny_model_dir, "pirate", seed=1)
    library_adapter(tiny_model_dir, "poet", seed=2)
    shown = page()
    dialog = shown.combine_dialog()
    assert isinstance(dialog, CombineDialog)
    qtbot.addWidget(dialog)
    dialog.set_choice({"pirate": 0.8, "poet": 0.4}, "cat")
    _wait(qtbot, dialog.try_it())
    assert "cannot" not in dialog.result_view.toPlainText()
    assert [p.name for p in preview_dir().iterdir()] != []  # tried, not yet kept
    assert sorted(r.name for r in list_adapters()) == ["pirate", "poet"]
    assert dialog.name_edit.text() == "pirate-poet-mix"
    with qtbot.waitSignal(dialog.adapterSaved, timeout=TASK_TIMEOUT_MS):
        task = dialog.save()
    _finish(qtbot, task)
    assert sorted(r.name for r in list_adapters()) == ["pirate", "pirate-poet-mix", "poet"]
    assert "pirate-poet-mix" in shown.visible_names()
    meta = read_adapter_meta(adapters_dir() / "pirate-poet-mix")
    assert meta["combined_from"] == [{"adapter": "pirate", "weight": 0.8}, {"adapter": "poet", "weight": 0.4}]

    dialog.set_choice({"pirate": 1.0, "poet": -1.0}, "cat")
    _wait(qtbot, dialog.try_it())
    dialog.reject()
    assert list(preview_dir().iterdir()) == []  # an unsaved preview is thrown away


def test_combine_dialog_shows_why_a_combination_is_refused(qtbot, tiny_model_dir, page):
    library_adapter(tiny_model_dir, "r4", rank=4)
    library_adapter(tiny_model_dir, "r8", rank=8)
    dialog = page().combine_dialog()
    qtbot.addWidget(dialog)
    dialog.set_choice({"r4": 0.5, "r8": 0.5}, "linear")
    _wait(qtbot, dialog.try_it())
    assert "one rank" in dialog.result_view.toPlainText()
    assert list(preview_dir().iterdir()) == []


def test_closing_the_merge_dialog_stops_the_merge_and_leaves_nothing(qtbot, tiny_model_dir, page):
    library_adapter(tiny_model_dir, "pirate")
    shown = page()
    shown.select_name("pirate")
    dialog = shown.merge_dialog()
    qtbot.addWidget(dialog)
    output = Path(dialog.output_edit.text())
    task = dialog.merge()
    dialog.reject()  # waits for the worker, which stops at its next step
    assert task.join(0)  # the worker has ended
    _finish(qtbot, task)
    assert not output.exists() and not [p for p in output.parent.iterdir() if p.name.startswith(".")]
    assert [model.name for model in list_models() if model.name == "pirate-merged"] == []
