"""The Data page on preference files, offscreen with the real engine and tokenizer: a pair shown
as its trainer reads it, the counts of identical pairs and cut-off prompts, and the preference
sets made in Compare listed and opened."""

from __future__ import annotations

import os
import re
from pathlib import Path

from helpers import ROOT
from test_data_page import TIMEOUT_MS, _coloured, _count_tokens_with, _open

from engine.data.preference_store import append_pair
from studio.pages.data import DataPage

DEMO = ROOT / "tests" / "data" / "preference" / "dpo_en_demo_slice.json"
_TRAINED = re.compile(r'<span style="[^"]*background-color:#c8e6c9;[^"]*">(.*?)</span>', re.S)
_READ_ONLY = re.compile(r'<span style="[^"]*background-color:#e3e8ec;[^"]*">(.*?)</span>', re.S)


def test_a_pair_is_shown_side_by_side_with_its_prompt_masked_and_its_counts(qtbot, shown, tiny_model_dir):
    page = shown(DataPage())
    _open(qtbot, page, DEMO)
    assert page.format_value.text() == "ShareGPT with chosen / rejected · JSON file"
    headers = [page.table.horizontalHeaderItem(column).text() for column in range(page.table.columnCount())]
    assert headers == ["Line in file", "Prompt", "Chosen", "Rejected"] and page.table.rowCount() == 20
    assert page.pair_view.isVisible() and not page.conversation_view.isVisible()
    assert (page.rows_value.text(), page.identical_value.text()) == ("20", "0")
    assert page.duplicates_value.isHidden() and page.prompt_cut_value.isVisible()

    page.max_length_spin.setValue(256)
    _count_tokens_with(qtbot, page, tiny_model_dir)
    cut = int(page.prompt_cut_value.text().split()[0])
    assert 0 < cut < 20 and page.usable_value.text() == str(20 - cut)
    assert page.counts_label.text().startswith("As DPO trains on it: 20 rows in the file")
    page.max_length_spin.setValue(4096)  # applied at once, without reading the file again
    assert not page.busy and page.prompt_cut_value.text() == "0"

    page.table.selectRow(0)
    prompt = "".join(_coloured(_READ_ONLY, page.prompt_view.toHtml()))
    assert "<|im_start|>user" in prompt.replace("&lt;", "<").replace("&gt;", ">")
    assert "language game" in prompt and _coloured(_TRAINED, page.prompt_view.toHtml()) == []
    chosen = "".join(_coloured(_TRAINED, page.answer_views[0].toHtml()))
    rejected = "".join(_coloured(_TRAINED, page.answer_views[1].toHtml()))
    assert chosen.startswith("That sounds like a fun") and rejected.startswith("Hello! I'd be happy")
    if os.environ.get("LORA_STUDIO_SHOTS"):  # a look for people: LORA_STUDIO_SHOTS=FOLDER
        page.max_length_spin.setValue(384)  # the answers' ends cut off, a long prompt's row skipped
        page.table.selectRow(0)
        page.grab().save(str(Path(os.environ["LORA_STUDIO_SHOTS"]) / "data-page-pairs.png"))


def test_the_preference_sets_are_listed_with_their_counts_and_open(qtbot, shown):
    prompt = [{"role": "user", "content": "Say hello."}]
    append_pair("pirate-style", prompt, "Arr, ahoy!", "Hello.")
    append_pair("pirate-style", prompt, "Ahoy, matey!", "Hi.")
    page = shown(DataPage())
    assert page.sets_button.text() == "My preferences (2 pairs)"
    actions = page.sets_menu.actions()
    assert [action.text() for action in actions] == ["pirate-style \u2014 2 pairs"]

    with qtbot.waitSignal(page.inspectionFinished, timeout=TIMEOUT_MS):
        actions[0].trigger()
    assert page.format_value.text().startswith("Pairs (prompt / chosen / rejected)")
    assert page.table.item(1, 2).text() == "Ahoy, matey!" and page.table.item(1, 3).text() == "Hi."
    assert page.usable_value.text() == "2" and page.identical_value.text() == "0"
