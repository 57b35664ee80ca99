"""The Data page with real files, the real engine and a real tokenizer, offscreen."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest
from PySide6.QtWidgets import QFileDialog

from studio.pages.data import DataPage

TIMEOUT_MS = 60_000
# The styles the training text uses for what the model learns and what it only reads.
_TRAINED = re.compile(r'<span style="[^"]*background-color:#c8e6c9;[^"]*">(.*?)</span>', re.S)
_READ_ONLY = re.compile(r'<span style="[^"]*background-color:#e3e8ec;[^"]*">(.*?)</span>', re.S)


def _coloured(pattern: re.Pattern, html: str) -> list[str]:
    """The text shown in one colour, the legend left out (its entries are padded with no-break spaces)."""
    return [text for text in pattern.findall(html) if not text.startswith("\xa0")]


@pytest.fixture
def page(shown) -> DataPage:
    return shown(DataPage())


def _open(qtbot, page: DataPage, path: Path) -> None:
    with qtbot.waitSignal(page.inspectionFinished, timeout=TIMEOUT_MS):
        page.picker.set_path(str(path))


def _count_tokens_with(qtbot, page: DataPage, model_dir: Path) -> None:
    with qtbot.waitSignal(page.inspectionFinished, timeout=TIMEOUT_MS):
        page.model_picker.set_ref(str(model_dir))
        page.tokens_check.setChecked(True)


def _qa_file(path: Path) -> Path:
    rows = [
        json.dumps({"question": "What is two plus two?", "answer": "Four."}),  # 1
        json.dumps({"question": "Name a colour.", "answer": "Blue."}),  # 2
        json.dumps({"question": "What is two plus two?", "answer": "Four."}),  # 3: a duplicate
        json.dumps({"question": "Say nothing.", "answer": "  "}),  # 4: an empty answer
        "{not json",  # 5
        json.dumps({"question": "Tell me about the sea.", "answer": "The sea is deep and wide. " * 12}),  # 6
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_the_page_shows_format_counts_problems_duplicates_and_the_split(qtbot, page, tmp_path):
    _open(qtbot, page, _qa_file(tmp_path / "qa.jsonl"))

    assert page.error_label.isHidden()
    assert page.format_value.text() == "Question / answer pairs · JSONL file"
    assert "Detected: Question / answer pairs" in page.detected_label.text()
    assert (page.rows_value.text(), page.usable_value.text()) == ("6", "4")
    assert page.problems_value.text() == "2 rows will be skipped"
    assert [page.problems_list.item(i).text() for i in range(page.problems_list.count())] == [
        "Line 4: 'answer' is empty",
        "Line 5: not valid JSON (Expecting property name enclosed in double quotes at column 2)"]
    assert page.duplicates_value.text().startswith("1 ") and page.empty_value.text().startswith("1 ")
    assert [page.table.item(row, 0).text() for row in range(page.table.rowCount())] == ["1", "2", "3", "6"]
    assert page.table.item(1, 2).text() == "Name a colour." and page.table.item(1, 3).text() == "Blue."
    assert page.truncated_value.text() == "choose a model to count tokens"

    page.val_spin.setValue(25)
    assert page.split_value.text() == "3 to train on, 1 to validate"


def test_token_lengths_are_drawn_with_the_cutoff_and_the_truncation_follows_max_length(
        qtbot, page, tmp_path, tiny_model_dir):
    _open(qtbot, page, _qa_file(tmp_path / "qa.jsonl"))
    _count_tokens_with(qtbot, page, tiny_model_dir)

    lengths = page.dataset.token_lengths
    assert len(lengths) == 4 and page.histogram.bars() == (4, 0)  # 512 tokens hold every row
    # The line's label says where the line is, though the cutoff was set while the line was hidden.
    assert page.histogram.cutoff_line.label.toPlainText() == f"max length {page.max_length_spin.value()}"
    assert page.truncated_value.text() == "none"
    longest = int(lengths.max())
    page.max_length_spin.setValue(longest - 1)
    assert not page.busy  # applied to the measured lengths, without reading the file again
    assert page.truncated_value.text() == "1 row (25.0%) would be truncated"
    assert page.histogram.cutoff_line.value() == longest - 1
    assert page.histogram.cutoff_line.label.toPlainText() == f"max length {longest - 1}"
    kept, cut = page.histogram.bars()
    assert kept + cut == 4 and cut >= 1


def test_the_selected_row_shows_prompt_and_learnt_tokens_in_two_colours(qtbot, page, tmp_path, tiny_model_dir):
    chat = {"messages": [
        {"role": "system", "content": "You are a pirate."},
        {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": "Arr, hello matey!"},
        {"role": "user", "content": "Where is the treasure?"},
        {"role": "assistant", "content": "On the island, arr."},
    ]}
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps(chat) + "\n", encoding="utf-8")
    _open(qtbot, page, path)
    assert "Count tokens with" in page.conversation_view.toPlainText()  # roles only, until a tokenizer is known
    _count_tokens_with(qtbot, page, tiny_model_dir)
    page.table.selectRow(0)

    shown = page.conversation_view.toHtml()
    assert [text.strip() for text in _coloured(_TRAINED, shown)] == [
        "Arr, hello matey!&lt;|im_end|&gt;", "On the island, arr.&lt;|im_end|&gt;"]
    read_only = "".join(_coloured(_READ_ONLY, shown))
    assert "You are a pirate." in read_only and "Where is the treasure?" in read_only
    assert "Arr, hello" not in read_only

    page.train_on_combo.setCurrentIndex(page.train_on_combo.findData("all"))
    shown = page.conversation_view.toHtml()
    assert _coloured(_READ_ONLY, shown) == [] and "Where is the treasure?" in "".join(_coloured(_TRAINED, shown))


def test_the_row_view_says_what_the_token_count_is_doing(qtbot, page, tmp_path, tiny_model_dir, monkeypatch):
    from studio.pages import data

    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "Hi"},
                                             {"role": "assistant", "content": "Arr."}]}) + "\n", encoding="utf-8")
    _open(qtbot, page, path)
    assert "Tick \u201cCount tokens with\u201d" in page.conversation_view.toPlainText()  # unticked: how to get tokens
    # The tokenizer takes its time to load, as a real model's does: here until the test lets it go.
    loading = threading.Event()
    real_load = data._load_tokenizer
    monkeypatch.setattr(data, "_load_tokenizer", lambda *args: loading.wait(TIMEOUT_MS / 1000) and real_load(*args))
    page.model_picker.set_ref(str(tiny_model_dir))
    page.tokens_check.setChecked(True)
    try:
        qtbot.waitUntil(lambda: page.progress_bar.format() == "loading the tokenizer", timeout=TIMEOUT_MS)
        shown = page.conversation_view.toPlainText()
        assert "Tick" not in shown and "Counting tokens with tiny-llama" in shown, shown
        page.stop_button.click()
    finally:
        loading.set()
    qtbot.waitUntil(lambda: not page.busy, timeout=TIMEOUT_MS)
    shown = page.conversation_view.toPlainText()
    assert "Tick" not in shown and "not counted" in shown, shown


def test_columns_no_format_fits_can_be_mapped_by_hand(qtbot, page, tmp_path):
    path = tmp_path / "de.csv"
    path.write_text("Frage,Antwort,Kontext\nWie spät ist es?,Zehn Uhr.,Uhr\nWo ist Berlin?,In Deutschland.,\n",
                    encoding="utf-8")
    _open(qtbot, page, path)
    assert page.error_label.isVisible()
    assert "columns (Frage, Antwort, Kontext)" in page.error_label.text()

    with qtbot.waitSignal(page.inspectionFinished, timeout=TIMEOUT_MS):
        page.format_combo.setCurrentIndex(page.format_combo.findData("qa"))
    choosers = page.column_choosers
    assert set(choosers) == {"question", "answer", "system"}
    assert choosers["question"].currentText() == "(choose a column)"
    assert [choosers["answer"].itemText(i) for i in range(choosers["answer"].count())][1:] == [
        "Frage", "Antwort", "Kontext"]
    with qtbot.waitSignal(page.inspectionFinished, timeout=TIMEOUT_MS):
        choosers["question"].setCurrentIndex(choosers["question"].findData("Frage"))
    answer = page.column_choosers["answer"]  # the choosers are rebuilt for each reading
    with qtbot.waitSignal(page.inspectionFinished, timeout=TIMEOUT_MS):
        answer.setCurrentIndex(answer.findData("Antwort"))

    assert page.error_label.isHidden()
    assert page.usable_value.text() == "2"
    assert page.table.item(0, 2).text() == "Wie spät ist es?" and page.table.item(0, 3).text() == "Zehn Uhr."
    assert "Ignored columns: Kontext" in page.detected_label.text()


def test_a_folder_of_files_is_one_dataset_with_problems_named_by_file(qtbot, page, tmp_path, monkeypatch):
    folder = tmp_path / "shards"
    folder.mkdir()
    (folder / "a.jsonl").write_text(json.dumps({"instruction": "Say hi.", "output": "Hi."}) + "\n", encoding="utf-8")
    (folder / "b.jsonl").write_text(json.dumps({"instruction": "Say bye.", "output": "Bye."}) + "\n{oops\n",
                                    encoding="utf-8")
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args: str(folder))
    with qtbot.waitSignal(page.inspectionFinished, timeout=TIMEOUT_MS):
        page.folder_button.click()

    assert page.format_value.text().endswith("· folder")
    assert [page.table.item(row, 0).text() for row in range(page.table.rowCount())] == \
        ["a.jsonl line 1", "b.jsonl line 1"]  # named as the problems below name them
    assert page.table.horizontalHeaderItem(0).text() == "File and place"
    assert page.problems_list.item(0).text().startswith("b.jsonl line 2: not valid JSON")


def test_a_million_rows_preview_at_once_and_the_window_keeps_responding_while_they_are_read(qtbot, page,
                                                                                                tmp_path):
    block = "".join(json.dumps({"question": f"What is {i} plus {i}?", "answer": f"It is {2 * i}."}) + "\n"
                    for i in range(1000))
    path = tmp_path / "million.jsonl"
    path.write_text(block * 1000, encoding="utf-8")
    # The 2 s preview target is measured by bench/data_preview.py, not asserted here (shared machines).
    page.picker.set_path(str(path))
    qtbot.waitUntil(lambda: page.table.rowCount() == 200, timeout=60_000)
    assert page.busy  # the preview is up while the million rows are still being read
    with qtbot.waitSignal(page.inspectionFinished, timeout=TIMEOUT_MS):
        page.stop_button.click()

    assert page.table.item(199, 2).text() == "What is 199 plus 199?"
    # On a quiet machine the count may finish before Stop lands; either way the page settles.
    assert page.rows_value.text() in ("not counted (stopped)", "1,000,000") and page.progress_bar.isHidden()
