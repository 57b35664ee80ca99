"""The Adapters, Models and Data pages with real files and the real engine."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QFileDialog

from engine.paths import adapters_dir
from studio.pages.adapters import COLUMNS as ADAPTER_COLUMNS
from studio.pages.adapters import AdaptersPage
from studio.pages.data import DataPage
from studio.pages.models import COLUMNS as MODEL_COLUMNS
from studio.pages.models import ModelsPage

LOSS_HISTORY = [[1, 2.5], [2, 2.1], [3, 1.7], [4, 1.4]]


def _adapter_folder(name: str, *, weights: bool = True, meta: dict | None = None) -> Path:
    folder = adapters_dir() / name
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}), encoding="utf-8")
    if weights:
        # A complete safetensors file holding no tensors: the library reads the header and
        # lists a file whose length does not match it as damaged (half-copied).
        (folder / "adapter_model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    if meta is not None:
        (folder / "studio.json").write_text(json.dumps(meta), encoding="utf-8")
    return folder


def _column(table, columns, name: str) -> list[str]:
    index = columns.index(name)
    return [table.item(row, index).text() for row in range(table.rowCount())]


def _row_of(table, columns, name: str) -> int:
    return _column(table, columns, "Name").index(name)


# --- Adapters -------------------------------------------------------------------------------

def test_adapters_page_lists_the_library_and_marks_a_damaged_folder(shown, monkeypatch):
    _adapter_folder("pirate", meta={
        "base_model": "SmolLM2-135M-Instruct", "method": "lora", "rank": 8, "dataset": "pirate.jsonl",
        "created": "2025-05-01T10:00:00", "steps": 40, "final_loss": 1.4, "loss_history": LOSS_HISTORY,
    })
    _adapter_folder("half-copied", weights=False)
    page = shown(AdaptersPage())

    table = page.table
    assert table.rowCount() == 2
    assert "2 adapters (1 damaged)" in page.summary_label.text()
    damaged = _row_of(table, ADAPTER_COLUMNS, "half-copied")
    status = _column(table, ADAPTER_COLUMNS, "Status")
    assert status[damaged] == "damaged: missing adapter_model.safetensors"
    pirate = _row_of(table, ADAPTER_COLUMNS, "pirate")
    assert status[pirate] == "ready"
    assert _column(table, ADAPTER_COLUMNS, "Final loss")[pirate] == "1.4000"
    assert _column(table, ADAPTER_COLUMNS, "Base model")[pirate] == "SmolLM2-135M-Instruct"

    table.selectRow(pirate)
    details = page.details.fields.toPlainText()
    assert "pirate.jsonl" in details and "SmolLM2-135M-Instruct" in details
    assert page.details.loss_plot.isVisible()
    assert page.details.loss_plot.point_count() == len(LOSS_HISTORY)

    opened: list[str] = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toLocalFile()) or True)
    page.open_button.click()
    assert opened == [str(adapters_dir() / "pirate")]

    table.selectRow(_row_of(table, ADAPTER_COLUMNS, "half-copied"))
    assert "Damaged: missing adapter_model.safetensors" in page.details.fields.toPlainText()
    assert not page.details.loss_plot.isVisible()


def test_adapters_page_sorts_numbers_as_numbers_and_keeps_the_selection(shown):
    _adapter_folder("small", meta={"steps": 9, "final_loss": 0.5})
    _adapter_folder("large", meta={"steps": 100, "final_loss": 0.25})
    page = shown(AdaptersPage())
    page.table.sortByColumn(ADAPTER_COLUMNS.index("Steps"), Qt.SortOrder.AscendingOrder)
    assert _column(page.table, ADAPTER_COLUMNS, "Steps") == ["9", "100"]
    page.table.selectRow(_row_of(page.table, ADAPTER_COLUMNS, "large"))
    _adapter_folder("newer", meta={"steps": 50})
    page.refresh_button.click()
    assert page.table.rowCount() == 3
    assert page.selected_path() == str(adapters_dir() / "large")


def test_adapters_page_with_an_empty_library_says_so(shown):
    page = shown(AdaptersPage())
    assert page.table.rowCount() == 0
    assert page.summary_label.text().startswith("No adapters yet")
    assert not page.open_button.isEnabled()


# --- Models ---------------------------------------------------------------------------------

def test_models_page_adds_a_model_folder(qtbot, shown, monkeypatch, tiny_model_dir):
    page = shown(ModelsPage())
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args, **kwargs: str(tiny_model_dir))
    with qtbot.waitSignal(page.modelsChanged, timeout=30_000):
        page.add_folder_button.click()
    qtbot.waitUntil(lambda: not page.busy)
    names = _column(page.table, MODEL_COLUMNS, "Name")
    assert tiny_model_dir.name in names
    row = names.index(tiny_model_dir.name)
    assert _column(page.table, MODEL_COLUMNS, "Ready")[row] == "yes"
    assert _column(page.table, MODEL_COLUMNS, "Architecture")[row] == "LlamaForCausalLM"
    assert _column(page.table, MODEL_COLUMNS, "Source")[row] == "folder"
    assert page.error_label.isHidden()
    assert f"Added {tiny_model_dir.name}" in page.progress_label.text()


def test_models_page_shows_why_a_folder_is_not_a_model(qtbot, shown, monkeypatch, tmp_path):
    empty = tmp_path / "just-some-folder"
    empty.mkdir()
    page = shown(ModelsPage())
    rows_before = page.table.rowCount()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args, **kwargs: str(empty))
    with qtbot.assertNotEmitted(page.modelsChanged):
        page.add_folder_button.click()
        qtbot.waitUntil(lambda: not page.busy, timeout=30_000)
    assert page.error_label.isVisible()
    assert "no config.json" in page.error_label.text()
    assert page.table.rowCount() == rows_before
    assert page.add_folder_button.isEnabled()


# --- Data -----------------------------------------------------------------------------------

def _chat_row(question: str, answer: str) -> str:
    return json.dumps({"messages": [
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer},
    ]})


def test_data_page_shows_format_rows_and_the_bad_line(qtbot, shown, tmp_path):
    dataset = tmp_path / "pirate.jsonl"
    dataset.write_text("\n".join([
        _chat_row("What is the capital of France?", "Arr, Paris be the capital!"),
        _chat_row("How do I boil an egg?", "Drop it in boilin' water, matey."),
        '{"messages": [{"role": "user", "content": "unfinished',
        _chat_row("What is two plus two?", "Four doubloons."),
    ]) + "\n", encoding="utf-8")
    page = shown(DataPage())
    page.picker.set_path(str(dataset))
    qtbot.waitUntil(lambda: page.dataset is not None and page.dataset.path == dataset, timeout=30_000)

    assert "messages" in page.format_value.text()
    assert page.rows_value.text() == "4"
    assert page.usable_value.text() == "3"
    assert page.problems_value.text() == "1 row will be skipped"
    assert page.problems_list.count() == 1
    assert page.problems_list.item(0).text().startswith("Line 3: not valid JSON")
    assert page.problems_list.isVisible()
    assert page.table.rowCount() == 3
    assert page.table.item(1, 2).text() == "How do I boil an egg?"
    assert page.table.item(1, 3).text() == "Drop it in boilin' water, matey."
    page.table.selectRow(2)
    conversation = page.conversation_view.toPlainText()
    assert "What is two plus two?" in conversation and "Four doubloons." in conversation
    assert page.error_label.isHidden()


def test_data_page_shows_why_a_file_cannot_be_used(qtbot, shown, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    page = shown(DataPage())
    page.picker.set_path(str(empty))
    qtbot.waitUntil(page.error_label.isVisible, timeout=30_000)
    assert "empty.jsonl is empty" in page.error_label.text()
    assert page.table.rowCount() == 0
    assert page.rows_value.text() == "–"
