"""The adapter library on disk: listing (fast, and honest about damage), edits, the trash,
import and export, and bad input refused with the library left as it was."""

from __future__ import annotations

import json
import os
import stat
import time
import zipfile
from pathlib import Path

import pytest
from lora_adapters import empty_safetensors, library_adapter, write_peft_adapter

from engine.errors import StudioError
from engine.adapters.library import (
    CHAT_SETTINGS,
    chat_settings,
    clear_chat_settings,
    duplicate_adapter,
    list_adapters,
    read_adapter_meta,
    rename_adapter,
    resolve_adapter,
    set_chat_settings,
    set_notes,
    set_tags,
)
from engine.adapters.transfer import export_adapter, import_adapter
from engine.adapters.trash import delete_adapter, empty_trash, list_trash, restore_adapter
from engine.paths import adapters_dir


def _names() -> list[str]:
    return sorted(record.name for record in list_adapters())


def _library_snapshot() -> list[str]:
    """Every path under the library, hidden ones included: what 'left as it was' means."""
    return sorted(str(p.relative_to(adapters_dir())) for p in adapters_dir().rglob("*"))


def _fake_adapter(name: str, meta: dict | None = None) -> Path:
    folder = adapters_dir() / name
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}), encoding="utf-8")
    empty_safetensors(folder / "adapter_model.safetensors")
    if meta is not None:
        (folder / "studio.json").write_text(json.dumps(meta), encoding="utf-8")
    return folder


def _logits(base: Path, adapter: Path) -> "object":
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter))
    with torch.no_grad():
        return model(input_ids=torch.tensor([[5, 6, 7, 8, 9]])).logits


# listing ---------------------------------------------------------------------------------------
def test_listing_shows_what_each_adapter_is_and_marks_damaged_folders(tiny_model_dir):
    library_adapter(tiny_model_dir, "pirate", meta={"eval_history": [[2, 1.9], [4, 1.6]], "tags": ["fun"]})
    half = library_adapter(tiny_model_dir, "half-copied")
    weights = half / "adapter_model.safetensors"
    with open(weights, "r+b") as handle:  # what an interrupted copy leaves
        handle.truncate(weights.stat().st_size // 2)
    (_fake_adapter("no-config") / "adapter_config.json").unlink()
    _fake_adapter("odd-types", meta={"created": 20260101, "steps": "many", "rank": [8], "method": {"x": 1},
                                     "tags": "not-a-list", "final_loss": "low", "loss_history": "nope"})
    _fake_adapter("bad-meta", meta=None)
    (adapters_dir() / "bad-meta" / "studio.json").write_text("{not json", encoding="utf-8")

    records = {record.name: record for record in list_adapters()}

    pirate = records["pirate"]
    assert (pirate.method, pirate.rank, pirate.dataset, pirate.final_loss, pirate.eval_loss, pirate.tags) == (
        "lora", 4, "pirate.jsonl", 1.25, 1.6, ["fun"])
    assert pirate.damaged is None and pirate.size_bytes > 1000
    assert "truncated" in records["half-copied"].damaged
    assert records["no-config"].damaged == "missing adapter_config.json"
    assert records["bad-meta"].damaged is None  # unreadable notes do not make the weights unusable
    odd = records["odd-types"]  # fields of the wrong type read as absent, never as a crash
    assert (odd.created, odd.steps, odd.rank, odd.method, odd.tags, odd.final_loss) == (None, None, 8, "lora", [], None)
    with pytest.raises(StudioError, match="truncated"):
        resolve_adapter("half-copied")


@pytest.mark.alone
def test_five_hundred_adapters_list_in_under_a_second():
    for index in range(500):
        _fake_adapter(f"adapter-{index:03}", meta={"method": "lora", "rank": 8, "final_loss": index / 100,
                                                   "loss_history": [[s, 2.0 - s / 100] for s in range(100)],
                                                   "created": f"2026-01-01T00:{index // 60:02}:{index % 60:02}"})
    started = time.perf_counter()
    records = list_adapters()
    elapsed = time.perf_counter() - started
    assert len(records) == 500 and records[0].name == "adapter-499"  # newest first
    assert elapsed < 1.0, f"listing 500 adapters took {elapsed:.2f} s"


# edits -----------------------------------------------------------------------------------------
def test_rename_keeps_the_files_and_refuses_taken_or_bad_names(tiny_model_dir):
    library_adapter(tiny_model_dir, "first")
    library_adapter(tiny_model_dir, "second")
    renamed = rename_adapter("first", "pirate-v2")
    assert _names() == ["pirate-v2", "second"]
    assert (renamed / "adapter_model.safetensors").is_file()
    assert (renamed / "README.md").read_text(encoding="utf-8").startswith("# pirate-v2\n")
    with pytest.raises(StudioError, match="already in the library"):
        rename_adapter("pirate-v2", "SECOND")
    with pytest.raises(StudioError, match="may only use letters"):
        rename_adapter("pirate-v2", "../escape")
    assert _names() == ["pirate-v2", "second"]


def test_tags_and_notes_are_kept_in_studio_json(tiny_model_dir):
    library_adapter(tiny_model_dir, "pirate")
    assert set_tags("pirate", ["  sea ", "fun", "Fun", "", "salty dogs"]) == ["sea", "fun", "salty dogs"]
    set_notes("pirate", "Talks like a pirate.\nGood at ships.\n")
    meta = read_adapter_meta(adapters_dir() / "pirate")
    assert meta["tags"] == ["sea", "fun", "salty dogs"] and meta["notes"] == "Talks like a pirate.\nGood at ships."
    assert meta["base_model_fingerprint"]  # the rest of the record is untouched
    assert list_adapters()[0].tags == ["sea", "fun", "salty dogs"]


def test_notes_never_overwrite_a_damaged_studio_json():
    folder = _fake_adapter("odd")
    (folder / "studio.json").write_text("[1, 2", encoding="utf-8")
    with pytest.raises(StudioError, match="damaged"):
        set_notes("odd", "hello")
    assert (folder / "studio.json").read_text(encoding="utf-8") == "[1, 2"


def test_chat_settings_are_kept_checked_and_a_hand_edited_one_is_ignored():
    folder = _fake_adapter("pirate", {"method": "lora"})
    assert set_chat_settings("pirate", {"top_k": 40, "temperature": 0.3}) == {"temperature": 0.3, "top_k": 40}
    kept = {"temperature": 0.5, "top_k": 40, "seed": 7}
    assert set_chat_settings("pirate", {"seed": 7, "temperature": 0.5}) == kept  # over the ones it had
    for bad, message in (({"temperature": 500.0}, "temperature .* between 0 and 100"), ({"top_k": 2.5}, "whole"),
                         ({"top_p": 0}, "top-p must be more than 0"), ({"seed": -1}, "seed"),
                         ({"colour": 1}, "unknown sampling setting 'colour'")):
        with pytest.raises(StudioError, match=message):
            set_chat_settings("pirate", {"max_new_tokens": 64, **bad})
    assert chat_settings(read_adapter_meta(folder)) == kept  # nothing of a refused change was written
    meta = read_adapter_meta(folder)
    meta[CHAT_SETTINGS] = {"temperature": "hot", "top_p": 0.8, "top_k": True, "max_new_tokens": 1e9, "seed": None}
    (folder / "studio.json").write_text(json.dumps(meta), encoding="utf-8")
    assert chat_settings(read_adapter_meta(folder)) == {"top_p": 0.8, "seed": None}
    (folder / "studio.json").write_text(json.dumps({**meta, CHAT_SETTINGS: [0.7]}), encoding="utf-8")
    assert chat_settings(read_adapter_meta(folder)) == {} and _names() == ["pirate"]
    clear_chat_settings("pirate")
    assert read_adapter_meta(folder) == {"method": "lora"}


def test_duplicate_is_an_independent_copy(tiny_model_dir):
    library_adapter(tiny_model_dir, "pirate")
    copy = duplicate_adapter("pirate")
    assert copy.name == "pirate-copy"
    assert read_adapter_meta(copy)["duplicated_from"] == "pirate"
    set_notes("pirate-copy", "changed")
    assert "notes" not in read_adapter_meta(adapters_dir() / "pirate")
    assert (copy / "adapter_model.safetensors").read_bytes() == (
        adapters_dir() / "pirate" / "adapter_model.safetensors").read_bytes()


# the trash -------------------------------------------------------------------------------------
def test_delete_moves_to_the_trash_and_restore_brings_it_back(tiny_model_dir):
    library_adapter(tiny_model_dir, "pirate")
    entry = delete_adapter("pirate")
    assert _names() == [] and [e.name for e in list_trash()] == ["pirate"]
    with pytest.raises(StudioError, match="unknown adapter"):
        resolve_adapter("pirate")

    library_adapter(tiny_model_dir, "pirate")  # the name was taken again meanwhile
    restored = restore_adapter(entry.id)
    assert restored.name == "pirate-2" and _names() == ["pirate", "pirate-2"]
    assert list_trash() == []
    with pytest.raises(StudioError, match="nothing in the trash"):
        restore_adapter(entry.id)


def test_empty_trash_deletes_for_good(tiny_model_dir):
    library_adapter(tiny_model_dir, "a")
    library_adapter(tiny_model_dir, "b")
    delete_adapter("a")
    delete_adapter("b")
    assert empty_trash() == 2
    assert list_trash() == [] and _names() == []
    assert not any((adapters_dir() / ".trash").iterdir())


# import and export -----------------------------------------------------------------------------
def test_export_then_import_round_trips_an_adapter_that_still_loads(tiny_model_dir, tmp_path):
    original = library_adapter(tiny_model_dir, "pirate")
    archive = export_adapter("pirate", tmp_path / "pirate")
    assert archive == tmp_path / "pirate.zip"
    with zipfile.ZipFile(archive) as handle:
        assert {"pirate/adapter_config.json", "pirate/adapter_model.safetensors", "pirate/studio.json",
                "pirate/README.md"} <= set(handle.namelist())
    with pytest.raises(StudioError, match="already exists"):
        export_adapter("pirate", archive)

    imported = import_adapter(archive)
    assert imported.name == "pirate-2"
    assert read_adapter_meta(imported)["base_model_fingerprint"] == read_adapter_meta(original)["base_model_fingerprint"]
    assert _logits(tiny_model_dir, imported).equal(_logits(tiny_model_dir, original))


def test_an_adapter_made_elsewhere_is_imported_with_what_its_config_says(tiny_model_dir, tmp_path):
    folder = write_peft_adapter(tiny_model_dir, tmp_path / "someones-adapter", rank=8, use_dora=True)
    imported = import_adapter(folder, name="their-dora")
    [record] = list_adapters()
    assert (record.name, record.method, record.rank, record.base_model) == (
        "their-dora", "dora", 8, str(tiny_model_dir))
    assert read_adapter_meta(imported)["imported_from"] == str(folder)
    assert (imported / "README.md").is_file()


def _zip_with(path: Path, entries: dict[str, bytes], links: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(path, "w") as handle:
        for name, data in entries.items():
            handle.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            handle.writestr(info, "/etc/passwd")
    return path


@pytest.mark.parametrize("entry, message", [
    ("../outside.txt", "points outside its folder"),
    ("/abs/adapter_config.json", "points outside its folder"),
    ("adapter/../../x", "points outside its folder"),
])
def test_zip_entries_escaping_the_folder_are_refused(tiny_model_dir, tmp_path, entry, message):
    good = write_peft_adapter(tiny_model_dir, tmp_path / "good")
    entries = {f"adapter/{f.name}": f.read_bytes() for f in good.iterdir()}
    entries[entry] = b"gotcha"
    before = _library_snapshot()
    with pytest.raises(StudioError, match=message):
        import_adapter(_zip_with(tmp_path / "evil.zip", entries))
    assert _library_snapshot() == before
    assert not (tmp_path / "outside.txt").exists()


def test_zip_with_a_symlink_is_refused(tiny_model_dir, tmp_path):
    good = write_peft_adapter(tiny_model_dir, tmp_path / "good")
    entries = {f"adapter/{f.name}": f.read_bytes() for f in good.iterdir()}
    before = _library_snapshot()
    with pytest.raises(StudioError, match="symbolic link"):
        import_adapter(_zip_with(tmp_path / "links.zip", entries, links=("adapter/notes.txt",)))
    assert _library_snapshot() == before


def test_folder_with_a_symlink_is_refused(tiny_model_dir, tmp_path):
    folder = write_peft_adapter(tiny_model_dir, tmp_path / "linked")
    os.symlink("/etc/hostname", folder / "extra.txt")
    with pytest.raises(StudioError, match="symbolic link"):
        import_adapter(folder)
    assert _names() == []


def test_config_from_a_newer_peft_is_refused(tiny_model_dir, tmp_path):
    folder = write_peft_adapter(tiny_model_dir, tmp_path / "future")
    config_file = folder / "adapter_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config.update(peft_version="99.1.0", lora_hyper_mode="wild")
    config_file.write_text(json.dumps(config), encoding="utf-8")
    before = _library_snapshot()
    with pytest.raises(StudioError, match=r"written by peft 99\.1\.0, newer than .* \(lora_hyper_mode\): upgrade peft"):
        import_adapter(folder)
    assert _library_snapshot() == before


def test_truncated_weights_and_pickle_weights_are_refused(tiny_model_dir, tmp_path):
    truncated = write_peft_adapter(tiny_model_dir, tmp_path / "truncated")
    weights = truncated / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    pickled = write_peft_adapter(tiny_model_dir, tmp_path / "pickled")
    (pickled / "adapter_model.safetensors").rename(pickled / "adapter_model.bin")
    before = _library_snapshot()
    with pytest.raises(StudioError, match="adapter_model.safetensors is truncated"):
        import_adapter(truncated)
    with pytest.raises(StudioError, match="pickle"):
        import_adapter(pickled)
    with pytest.raises(StudioError, match="not a PEFT adapter"):
        import_adapter(tmp_path)
    assert _library_snapshot() == before


# the command line ------------------------------------------------------------------------------
def _cli(capsys, *args: str) -> tuple[int, str, str]:
    from engine.cli.main import main

    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_manages_the_library_with_json_output(tiny_model_dir, tmp_path, capsys):
    folder = write_peft_adapter(tiny_model_dir, tmp_path / "downloaded")
    code, out, _ = _cli(capsys, "adapters", "import", str(folder), "--name", "pirate", "--json")
    assert code == 0 and json.loads(out)["name"] == "pirate"
    code, out, _ = _cli(capsys, "adapters", "edit", "pirate", "--tags", "sea,fun", "--notes", "Arr", "--json")
    assert json.loads(out) == {"tags": ["sea", "fun"], "notes": "Arr"}
    code, out, _ = _cli(capsys, "adapters", "rename", "pirate", "captain", "--json")
    assert json.loads(out)["name"] == "captain"
    code, out, _ = _cli(capsys, "adapters", "export", "captain", "--output", str(tmp_path / "captain.zip"), "--json")
    assert json.loads(out)["zip"] == str(tmp_path / "captain.zip")
    code, out, _ = _cli(capsys, "adapters", "duplicate", "captain", "--json")
    assert json.loads(out)["name"] == "captain-copy"
    code, out, _ = _cli(capsys, "adapters", "delete", "captain-copy", "--json")
    trash_id = json.loads(out)["id"]
    code, out, _ = _cli(capsys, "adapters", "list", "--json")
    [listed] = json.loads(out)["adapters"]
    assert (listed["name"], listed["tags"], listed["method"], listed["rank"]) == ("captain", ["sea", "fun"], "lora", 4)
    code, out, _ = _cli(capsys, "adapters", "trash", "--json")
    assert [e["name"] for e in json.loads(out)["trash"]] == ["captain-copy"]
    code, out, _ = _cli(capsys, "adapters", "restore", trash_id, "--json")
    assert code == 0 and json.loads(out)["name"] == "captain-copy"


def test_cli_refuses_a_bad_zip_with_one_line(tmp_path, capsys):
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as archive:
        archive.writestr("../../escape.txt", "x")
    code, out, err = _cli(capsys, "adapters", "import", str(tmp_path / "evil.zip"))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: evil.zip is refused: entry '../../escape.txt'")
    assert _names() == []


def test_cli_sets_shows_and_clears_an_adapters_chat_settings(capsys):
    _fake_adapter("pirate", {"method": "lora"})
    code, out, _ = _cli(capsys, "adapters", "chat-settings", "pirate", "--temperature", "0.3", "--top-k", "40",
                        "--seed", "7")
    assert code == 0 and out == "chat settings: temperature 0.3, top k 40, seed 7\n"
    code, out, _ = _cli(capsys, "adapters", "chat-settings", "pirate", "--seed", "random", "--json")
    assert json.loads(out) == {"chat_settings": {"temperature": 0.3, "top_k": 40, "seed": None}}
    code, out, _ = _cli(capsys, "adapters", "show", "pirate")
    assert "  chat settings   temperature 0.3, top k 40, seed random\n" in out
    code, out, err = _cli(capsys, "adapters", "chat-settings", "pirate", "--top-p", "1.5")
    assert code == 2 and err.count("\n") == 1 and "top-p must be between 0 and 1" in err
    code, out, _ = _cli(capsys, "adapters", "chat-settings", "pirate", "--clear")
    assert code == 0 and out == "chat settings: none (the chat uses its own)\n"
