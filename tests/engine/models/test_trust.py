"""A model that brings its own Python code runs it only after the user agreed, per model,
and only that code: changed files need a new yes."""

from __future__ import annotations

import pytest

from engine.cli import main as cli

from engine.models import trust
from engine.errors import StudioError
from engine.models.store import resolve_model
from engine.train import recipe
from training_runs import new_run


def test_a_model_with_its_own_code_is_refused_until_trusted_and_its_code_never_runs(custom_model, tmp_path):
    folder, marker = custom_model
    with pytest.raises(StudioError) as refused:
        resolve_model(str(folder))
    message = str(refused.value)
    assert "runs its own Python code (modeling_custom.py)" in message and "lora-studio models trust" in message
    finished = recipe.run_and_report(new_run(tmp_path / "refused", folder, max_steps=1))
    assert finished.status == "failed" and "runs its own Python code" in finished.error
    assert not marker.exists()


def test_trusted_code_runs_and_changed_code_needs_a_new_yes(custom_model, tmp_path, capsys):
    folder, marker = custom_model
    assert cli.main(["models", "trust", str(folder)]) == 0
    assert "trusted custom-model: its own code (modeling_custom.py) will run" in capsys.readouterr().out
    finished = recipe.run_and_report(new_run(tmp_path / "trusted", folder, max_steps=1))
    assert finished.status == "completed", finished.error
    assert marker.read_text() == "the model's own code ran"

    with open(folder / "modeling_custom.py", "a", encoding="utf-8") as code:
        code.write("\nprint('something new')\n")
    assert not trust.is_trusted(folder)
    with pytest.raises(StudioError, match="runs its own Python code"):
        resolve_model(str(folder))
    assert cli.main(["models", "trust", str(folder), "--revoke"]) == 0


def test_trusting_a_model_without_code_of_its_own_says_there_is_nothing_to_trust(tiny_model_dir, capsys):
    assert cli.main(["models", "trust", str(tiny_model_dir)]) == 2
    assert "runs no code of its own" in capsys.readouterr().err
