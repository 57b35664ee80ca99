"""Training on what the data pipeline gives: a base model without a chat template on a CSV,
a validation split with eval loss, and the choice to stop on bad rows. Real child processes."""

from __future__ import annotations

import json
from pathlib import Path

from engine.run.config import RunConfig
from engine.data.rendering import CHATML_TEMPLATE
from engine.run.events import EvalMetrics, LogLine, RunFinished, RunStarted
from engine.jobs.training_job import TrainingJob


def _base_model_copy(tiny_model_dir: Path, folder: Path) -> Path:
    """The tiny model as a base checkpoint: the same weights, no chat template."""
    import shutil

    from transformers import AutoTokenizer

    shutil.copytree(tiny_model_dir, folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, eos_token="<|endoftext|>")
    tokenizer.chat_template = None
    tokenizer.save_pretrained(folder)
    return folder


def test_training_a_base_model_on_a_csv_holds_out_rows_and_saves_the_chatml_it_used(tiny_model_dir, tmp_path):
    from engine.chat.session import ChatSession

    base = _base_model_copy(tiny_model_dir, tmp_path / "base")
    csv_path = tmp_path / "qa.csv"
    csv_path.write_text("Question,Answer\n" + "".join(f"What is {i} plus {i}?,It is {2 * i}.\n" for i in range(16)),
                        encoding="utf-8")
    config = RunConfig(model=str(base), dataset=str(csv_path), rank=4, alpha=8, max_steps=4, batch_size=4,
                       max_length=64, lr=1e-2, log_every=1, eval_every=2, val_fraction=0.25, name="base-qa")
    events = list(TrainingJob.start(config).events())

    finished = events[-1]
    assert isinstance(finished, RunFinished) and finished.status == "completed", finished.error
    assert next(e for e in events if isinstance(e, RunStarted)).train_examples == 12
    assert [e.step for e in events if isinstance(e, EvalMetrics)] == [2, 4]
    assert any("no chat template" in e.message for e in events if isinstance(e, LogLine))
    meta = json.loads((Path(finished.adapter) / "studio.json").read_text(encoding="utf-8"))
    assert meta["chat_template"] == CHATML_TEMPLATE and meta["val_fraction"] == 0.25
    evaluations = [e for e in events if isinstance(e, EvalMetrics)]
    assert meta["eval_history"] == [[e.step, e.eval_loss] for e in evaluations]
    assert meta["final_eval_loss"] == evaluations[-1].eval_loss

    session = ChatSession(str(base))
    session.load()
    session.set_adapter("base-qa")
    assert session.render_prompt([{"role": "user", "content": "What is 1 plus 1?"}]) == (
        "<|endoftext|><|im_start|>user\nWhat is 1 plus 1?<|im_end|>\n<|im_start|>assistant\n")


def test_a_run_told_to_stop_on_bad_rows_fails_naming_the_first(tiny_model_dir, tmp_path, monkeypatch):
    from engine.data import trainable

    # The bad rows lie past the rows the parent reads before the start: the child finds them.
    monkeypatch.setattr(trainable, "STOP_SCAN_ROWS", 1)
    dataset = tmp_path / "qa.jsonl"
    dataset.write_text("\n".join([
        json.dumps({"question": "What is two plus two?", "answer": "Four."}),
        json.dumps({"question": "Name a colour.", "answer": "Blue."}),
        json.dumps({"question": "What is two plus two?", "answer": "Four."}),
        json.dumps({"question": "Say nothing.", "answer": "   "}),
        "not json {",
    ]) + "\n", encoding="utf-8")
    config = RunConfig(model=str(tiny_model_dir), dataset=str(dataset), max_steps=2, batch_size=2, max_length=64,
                       bad_rows="stop")
    finished = list(TrainingJob.start(config).events())[-1]

    assert finished.status == "failed"
    assert finished.error.startswith("2 of 5 rows are bad; first at line 4: 'answer' is empty")
    assert "train on the good rows" in finished.error
