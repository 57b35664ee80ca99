"""The Chat page keeps an adapter's sampling settings: "Keep these settings for <adapter>" saves the
controls, and picking the adapter again fills them in."""

from __future__ import annotations

from lora_adapters import library_adapter

from engine.adapters.library import chat_settings, duplicate_adapter, read_adapter_meta
from studio.pages.chat import ChatPage


def test_an_adapters_kept_settings_fill_the_controls_when_it_is_picked(qtbot, shown, tiny_model_dir):
    pirate = library_adapter(tiny_model_dir, "pirate")
    duplicate_adapter("pirate", "poet")
    page = shown(ChatPage())
    controls = page.settings
    button = page.keep_settings_button
    assert not button.isEnabled()  # the base model keeps no settings

    page.adapter_picker.set_ref("pirate")
    assert button.isEnabled() and button.text() == "Keep these settings for pirate"
    controls.temperature_box.setValue(0.3)
    controls.top_k_box.setValue(40)
    controls.max_tokens_box.setValue(64)
    controls.seed_box.setValue(7)
    button.click()
    assert page.status_label.text().startswith("Kept these settings for pirate")
    kept = {"temperature": 0.3, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.0, "max_new_tokens": 64, "seed": 7}
    assert chat_settings(read_adapter_meta(pirate)) == kept

    page.adapter_picker.set_ref("poet")  # an adapter without settings leaves the controls as they are
    controls.temperature_box.setValue(1.2)
    controls.seed_box.setValue(controls.seed_box.minimum())  # random
    page.status_label.clear()
    page.adapter_picker.set_ref(None)
    page.adapter_picker.set_ref("pirate")
    assert controls.values() == kept
    assert page.status_label.text() == "Sampling settings from pirate's chat settings."
