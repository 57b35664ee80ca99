"""The Train page's pure-bf16 control: only full fine-tuning can use it, and the memory bar
follows it."""

from __future__ import annotations


def _choose(combo, value) -> None:
    combo.setCurrentIndex(combo.findData(value))


def test_pure_bf16_is_offered_for_full_fine_tuning_only_and_the_memory_bar_follows_it(train_page, tiny_model_dir):
    page, form = train_page, train_page.form
    page.model_picker.set_ref(str(tiny_model_dir))
    form.advanced_radio.click()
    assert form.pure_bf16_combo.isVisibleTo(page)
    assert not form.pure_bf16_combo.isEnabled()  # LoRA, the default
    assert "full fine-tuning only" in form.pure_bf16_combo.toolTip()

    _choose(form.method_combo, "full")
    _choose(form.precision_combo, "bf16")
    assert form.pure_bf16_combo.isEnabled() and "half the memory" in form.pure_bf16_combo.toolTip()
    page.update_estimate()
    pure = page._estimate
    assert pure.plan.pure_bf16 and form.values()["pure_bf16"] == "auto"
    assert pure.items["optimizer_states"] == 6 * pure.total_params  # bf16 moments and the Kahan buffer
    assert "16-bit weight copies" not in page.memory_bar.bar.toolTip()

    _choose(form.pure_bf16_combo, "off")
    page.update_estimate()
    masters = page._estimate
    assert not masters.plan.pure_bf16 and masters.items["weights"] == 2 * pure.items["weights"]
    assert masters.peak_allocated_bytes > pure.peak_allocated_bytes
    assert "16-bit weight copies" in page.memory_bar.bar.toolTip()

    _choose(form.method_combo, "lora")  # the choice made for full fine-tuning does not refuse a LoRA run
    assert form.values()["pure_bf16"] == "auto"
