"""One rule for the names people give runs, model-store entries and adapters, checked against the
whole name: a newline at its end (which ``^...$`` with ``match`` let through) is refused everywhere."""

from __future__ import annotations

import pytest

from engine.adapters.library import check_name
from engine.core.names import MAX_NAME, is_valid_name
from engine.errors import StudioError
from engine.models import store
from engine.run.config import RunConfig


@pytest.mark.parametrize("name", ["pirate\n", "pi\nrate", "pirate\x00", "-pirate", "a" * (MAX_NAME + 1), "", "..",
                                  "pi rate", "pi/rate"])
def test_a_name_that_is_not_plain_is_refused_by_every_kind_of_entry(name, tiny_model_dir):
    assert not is_valid_name(name)
    with pytest.raises(StudioError, match="may only use letters, digits"):
        RunConfig(model="m", dataset="d.jsonl", name=name).validate()
    with pytest.raises(StudioError, match="may only use letters, digits"):
        store.add_model(tiny_model_dir, name=name)
    if name.strip() == name:  # the library strips what is typed around a name, then checks the rest
        with pytest.raises(StudioError, match="may only use letters, digits"):
            check_name(name)


def test_a_plain_name_is_taken_as_it_is(tiny_model_dir):
    name = "pirate-v2.1_final"
    assert is_valid_name(name) and is_valid_name("a" * MAX_NAME)
    RunConfig(model="m", dataset="d.jsonl", name=name).validate()
    assert store.add_model(tiny_model_dir, name=name).name == name
    assert check_name(f" {name}\n") == name
