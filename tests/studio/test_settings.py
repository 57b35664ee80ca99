"""The settings file: remembered across restarts, written atomically, never lost when broken."""

from __future__ import annotations

import json

import pytest

from engine.paths import studio_home
from studio.settings import Settings, app_settings


def _path():
    return studio_home() / "settings.json"


def test_values_survive_a_restart(qtbot):
    settings = Settings.load()
    settings.set("train.per_model", {"starter": {"rank": 8}})
    settings.set("window.geometry", "AdnQywADAAA=")
    settings.flush()
    again = Settings.load()
    assert again.get("train.per_model") == {"starter": {"rank": 8}}
    assert again.get("window.geometry") == "AdnQywADAAA="
    assert again.get("never.set", "fallback") == "fallback"
    assert again.take_notice() is None


def test_a_burst_of_changes_is_saved_soon_as_one_write(qtbot):
    settings = Settings.load()
    for width in range(100, 200):
        settings.set("home.splitter", [width, 300])
    assert json.loads(_path().read_text()) == {}  # nothing written yet: the write waits for the burst to end
    qtbot.waitUntil(lambda: json.loads(_path().read_text()).get("home.splitter") == [199, 300], timeout=5000)
    assert not list(studio_home().glob(".settings.json.*"))  # no temporary file left behind


def test_a_value_read_back_is_a_copy():
    settings = Settings.load()
    settings.set("runs.recent", ["a"])
    recent = settings.get("runs.recent")
    recent.append("b")
    assert settings.get("runs.recent") == ["a"]


def test_only_what_json_can_hold_is_accepted():
    with pytest.raises(TypeError):
        Settings.load().set("window.geometry", b"\x01\x02")


def test_a_missing_file_is_created_with_the_defaults_and_says_so():
    settings = Settings.load()
    assert "No settings yet" in settings.take_notice()
    assert settings.take_notice() is None  # said once
    assert json.loads(_path().read_text()) == {}


def test_an_empty_file_is_replaced_by_the_defaults():
    _path().write_text("  \n")
    settings = Settings.load()
    assert settings.take_notice() == "settings.json was empty: starting with the default settings"
    assert json.loads(_path().read_text()) == {}


@pytest.mark.parametrize("content, reason", [('{"window.geometry": "AdnQ', "not valid JSON"),
                                             ('["a", "list"]', "not a JSON object")])
def test_a_corrupt_file_is_kept_aside_and_replaced_by_the_defaults(content, reason):
    _path().write_text(content)
    settings = Settings.load()
    (kept,) = studio_home().glob("settings.json.corrupt-*")
    assert kept.read_text() == content
    notice = settings.take_notice()
    assert reason in notice and kept.name in notice and "\n" not in notice
    assert settings.get("window.geometry") is None
    assert json.loads(_path().read_text()) == {}


def test_the_app_settings_follow_the_app_data_folder(tmp_path, monkeypatch):
    first = app_settings()
    assert app_settings() is first
    first.set("last.model", "starter")
    monkeypatch.setenv("LORA_STUDIO_HOME", str(tmp_path / "other-home"))
    other = app_settings()
    assert other is not first and other.get("last.model") is None
    assert json.loads(first.path.read_text())["last.model"] == "starter"  # the old one was saved on the way out
