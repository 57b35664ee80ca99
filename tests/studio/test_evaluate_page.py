"""The Evaluate page on the tiny model: the base and an adapter from the library answer a small set,
the scoreboard shows the document's scores, the example browser shows the answers side by side and
narrows to where the adapter lost; Stop ends an evaluation, keeping nothing; a regex that does not
compile is one line and runs nothing; closing the window stops an evaluation."""

from __future__ import annotations

import json
import re
from pathlib import Path

from lora_adapters import library_adapter
from PySide6.QtCore import Qt
from PySide6.QtGui import QTextTable

from engine.adapters.library import read_adapter_meta
from engine.paths import adapters_dir
from studio import workers
from studio.main_window import MainWindow
from studio.pages.evaluate import EvaluatePage
from studio.widgets.eval_browser import ALL, LOST, WON
from studio.widgets.eval_scoreboard import score_text
from studio.widgets.eval_words import heading

TIMEOUT_MS = 120_000
# The tiny model's base answers nothing but line breaks: nothing once SQuAD's normalisation has taken
# the punctuation out, like a reference of ".". Its token F1 on such a row is 1; the adapter's, which
# writes words, is 0: on those rows the adapter lost.
EMPTY_REFERENCE = "."


def _write_set(path: Path, rows: int = 6) -> Path:
    questions = ["What is the capital of France?", "How do I boil an egg?", "What is two plus two?",
                 "Tell me about the moon.", "Where do parrots live?", "What is a doubloon?"]
    with open(path, "w", encoding="utf-8") as handle:
        for number in range(rows):
            answer = EMPTY_REFERENCE if number % 2 else "Arr, matey! That be a fine question. Yo-ho-ho!"
            handle.write(json.dumps({"messages": [{"role": "user", "content": questions[number]},
                                                  {"role": "assistant", "content": answer}]}) + "\n")
    return path


def _words(text: str) -> str:
    # The tiny model writes control characters that a text document does not keep.
    return re.sub(r"\W", "", text)


def _choose(page: EvaluatePage, model: Path, dataset: Path, *, adapters=(), max_new_tokens: int = 8) -> None:
    page.model_picker.set_ref(str(model))
    page.setup.set_checked(list(adapters))
    page.setup.use_dataset(str(dataset))
    page.setup.max_tokens_spin.setValue(max_new_tokens)
    page.setup.forgetting_check.setChecked(False)  # the engine's tests check it; here it would only cost time


def _run(qtbot, page: EvaluatePage) -> str:
    with qtbot.waitSignal(page.evaluationEnded, timeout=TIMEOUT_MS) as ended:
        page.run_button.click()
        assert not page.run_button.isEnabled() and page.stop_button.isEnabled()
    return ended.args[0]


def test_the_base_and_an_adapter_are_scored_and_their_answers_shown_side_by_side(qtbot, shown, tiny_model_dir,
                                                                                   tmp_path):
    library_adapter(tiny_model_dir, "pirate")
    page = shown(EvaluatePage())
    _choose(page, tiny_model_dir, _write_set(tmp_path / "eval.jsonl"), adapters=["pirate"])

    assert _run(qtbot, page) == "finished", page.message_label.text()
    document = page.document
    assert [c["label"] for c in document["candidates"]] == ["base", "pirate"]
    assert page.run_button.isEnabled() and page.save_results_button.isEnabled()

    board = page.scoreboard
    assert board.rowCount() == 2
    for row, candidate in enumerate(document["candidates"]):
        assert board.item(row, 0).text() == candidate["label"]
        for name in ("rouge_l", "token_f1", "chrf"):
            assert board.item(row, board.column_of(heading(name))).text() == score_text(candidate["scores"][name])
    header = board.horizontalHeaderItem(board.column_of(heading("rouge_l")))
    assert "higher is better" in header.toolTip().lower()
    board.sortByColumn(board.column_of(heading("chrf")), Qt.SortOrder.DescendingOrder)
    chrf = [board.item(row, board.column_of(heading("chrf"))).text() for row in range(2)]
    assert chrf == sorted(chrf, key=float, reverse=True)

    browser = page.browser
    assert browser.shown_indexes() == list(range(6))
    example = document["examples"][browser.shown_indexes()[0]]
    shown_text = _words(browser.detail.toPlainText())
    assert _words(example["prompt"][-1]["content"]) in shown_text
    assert _words(example["reference"]) in shown_text
    assert _words(example["answers"]["pirate"]["text"]) in shown_text
    tables = [frame for frame in browser.detail.document().rootFrame().childFrames() if isinstance(frame, QTextTable)]
    assert [table.columns() for table in tables] == [2]  # base and pirate, side by side

    lost = [e["index"] for e in document["examples"]
            if e["answers"]["pirate"]["scores"]["token_f1"] < e["answers"]["base"]["scores"]["token_f1"]]
    won = [e["index"] for e in document["examples"]
           if e["answers"]["pirate"]["scores"]["token_f1"] > e["answers"]["base"]["scores"]["token_f1"]]
    assert 0 < len(lost) < 6, document["examples"]
    browser.set_filter(LOST, "pirate", "token_f1")
    assert browser.shown_indexes() == lost
    assert browser.count_label.text() == f"{len(lost)} of 6 examples"
    assert "lost to the base" in browser.detail.toPlainText()
    browser.set_filter(WON)
    assert browser.shown_indexes() == won
    browser.set_filter(ALL)
    assert browser.shown_indexes() == list(range(6))

    saved = page.save_results_to(str(tmp_path / "results.json"))
    assert json.loads(saved.read_text(encoding="utf-8"))["set"]["hash"] == document["set"]["hash"]
    # The results are kept with the library adapter, by the set's hash, for the Adapters page.
    stored = read_adapter_meta(adapters_dir() / "pirate")["evaluations"]
    assert document["set"]["hash"] in stored
    with qtbot.waitSignal(page.reportWritten, timeout=TIMEOUT_MS) as written:
        page.write_report_to(str(tmp_path / "report.html"), open_it=False)
    report = Path(written.args[0]).read_text(encoding="utf-8")
    assert "pirate" in report and "<table" in report and "No plot of quality" in report  # pirate has no run


def test_stop_ends_an_evaluation_and_keeps_nothing(qtbot, shown, tiny_model_dir, tmp_path):
    page = shown(EvaluatePage())
    _choose(page, tiny_model_dir, _write_set(tmp_path / "eval.jsonl"), max_new_tokens=4000)
    with qtbot.waitSignal(page.evaluationEnded, timeout=TIMEOUT_MS) as ended:
        page.run_button.click()
        assert not page.run_button.isEnabled() and not page.setup.isEnabled()
        qtbot.waitUntil(lambda: page.progress.bar.maximum() > 1, timeout=TIMEOUT_MS)  # answering
        page.stop_button.click()
        assert not page.stop_button.isEnabled()
    assert ended.args[0] == "stopped"
    assert page.progress.bar.text() == "stopped"
    assert page.message_label.text() == "Stopped: nothing was kept."
    assert page.document is None and page.scoreboard.rowCount() == 0
    assert page.run_button.isEnabled() and page.setup.isEnabled() and not page.stop_button.isEnabled()


def test_a_regex_that_does_not_compile_is_one_line_and_runs_nothing(qtbot, shown, tiny_model_dir, tmp_path):
    page = shown(EvaluatePage())
    _choose(page, tiny_model_dir, _write_set(tmp_path / "eval.jsonl"))
    page.setup.include_base_check.setChecked(False)
    assert not page.run_button.isEnabled()  # nothing to evaluate
    assert "include the base model" in page.run_button.toolTip()
    page.setup.include_base_check.setChecked(True)

    page.setup.advanced_button.click()
    regex = "answer: (\\d+"
    qtbot.keyClicks(page.setup.regex_edit, regex)
    assert page.setup.metric_checks["accuracy"].isChecked()  # the regex is for accuracy
    page.run_button.click()
    assert page.message_label.isVisible()
    assert page.message_label.text().startswith(f"the answer regex {regex!r} does not compile: missing )")
    assert "\n" not in page.message_label.text()
    assert not workers.live_tasks() and not page.busy
    assert page.progress.bar.text() == "no evaluation yet"
    assert page.run_button.isEnabled()


def test_closing_the_window_stops_an_evaluation(qtbot, tiny_model_dir, tmp_path):
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    window.show_page("Evaluate")
    page = window.evaluate_page
    assert window.sidebar.currentItem().text() == "Evaluate"
    _choose(page, tiny_model_dir, _write_set(tmp_path / "eval.jsonl"), max_new_tokens=4000)
    page.run_button.click()
    qtbot.waitUntil(lambda: page.progress.bar.maximum() > 1, timeout=TIMEOUT_MS)
    window.close()
    assert not workers.live_tasks()  # the window waited for it to end
