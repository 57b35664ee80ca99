"""The set-up installs from a lock: the committed locks agree with pyproject.toml, a lock that
does not is named in one line before anything is installed, and a set-up that cannot reach the
package registry says so in one line and leaves no half-made environment behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import lockcheck  # noqa: E402  (a maintainer's tool, not part of the installed package)

LOCKS = [ROOT / "locks" / "cpu.txt", ROOT / "locks" / "cuda.txt"]


@pytest.mark.parametrize("lock", LOCKS, ids=lambda lock: lock.name)
def test_the_committed_locks_pin_what_pyproject_asks_for(lock):
    assert lockcheck.problem(lock) is None
    pins, _asked = lockcheck.locked_pins(lock)
    assert {"transformers", "peft", "bitsandbytes", "pyside6-essentials", "pytest", "uv"} <= set(pins)


def test_only_the_cuda_lock_leaves_torch_to_the_machine():
    cpu, _ = lockcheck.locked_pins(LOCKS[0])
    cuda, _ = lockcheck.locked_pins(LOCKS[1])
    assert cpu["torch"].endswith("+cpu") and "torch" not in cuda
    assert not [name for name in cpu if name.startswith("nvidia-") and name != "nvidia-ml-py"]
    assert {name: version for name, version in cpu.items() if name != "torch"} == cuda


def _pyproject_with(tmp_path, old: str, new: str) -> Path:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert old in text
    changed = tmp_path / "pyproject.toml"
    changed.write_text(text.replace(old, new, 1), encoding="utf-8")
    return changed


def test_a_dependency_added_to_pyproject_only_is_named(tmp_path):
    pyproject = _pyproject_with(tmp_path, '"psutil>=5.9",', '"psutil>=5.9",\n    "scikit-learn>=1.4",')
    assert lockcheck.problem(LOCKS[0], pyproject) == ("cpu.txt has no pin for scikit-learn, which pyproject.toml "
                                                      "asks for: run make lock")


def test_a_dependency_left_in_the_lock_only_is_named(tmp_path):
    pyproject = _pyproject_with(tmp_path, '    "tqdm>=4.66",\n', "")
    assert lockcheck.problem(LOCKS[0], pyproject) == ("cpu.txt pins tqdm for lora-studio, but pyproject.toml "
                                                      "no longer asks for it: run make lock")


def test_a_range_the_locked_version_falls_outside_is_named(tmp_path):
    pyproject = _pyproject_with(tmp_path, '"peft>=0.17",', '"peft>=99",')
    message = lockcheck.problem(LOCKS[0], pyproject)
    assert message.startswith("cpu.txt pins peft==") and "outside pyproject.toml's peft>=99" in message


def test_the_command_line_check_prints_one_line_and_fails(tmp_path):
    lock = tmp_path / "cpu.txt"
    lock.write_text("\n".join(line for line in LOCKS[0].read_text().splitlines() if not line.startswith("peft==")))
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "lockcheck.py"), str(lock)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.splitlines() == ["cpu.txt has no pin for peft, which pyproject.toml asks for: run make lock"]


def test_a_set_up_without_the_registry_says_so_in_one_line_and_keeps_nothing(tmp_path):
    env = {name: value for name, value in os.environ.items() if not name.startswith("PIP_")}
    # No configuration files (they may name local wheel folders), and an index no one answers on.
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL="http://127.0.0.1:9/simple", PIP_RETRIES="0",
               PIP_TIMEOUT="5")
    venv = tmp_path / "venv"
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "setup_venv.py"), str(venv), str(LOCKS[0])],
                            env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"set-up: installing cpu.txt failed: the package registry could not be reached (no network, or a proxy or "
        f"PIP_INDEX_URL is needed); nothing was kept, details in {tmp_path / 'venv-setup.log'}"]
    assert not venv.exists()
    assert "Connection refused" in (tmp_path / "venv-setup.log").read_text()


def test_a_set_up_that_was_cut_off_is_started_again_not_taken_for_finished(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("half-made")  # a venv the last set-up never finished
    lock = tmp_path / "cpu.txt"
    lock.write_text(LOCKS[0].read_text().replace("\npeft==", "\npeft==0.0.1\n# was "))
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "setup_venv.py"), str(venv), str(lock)],
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "set-up: checking the lock failed: cpu.txt pins peft==0.0.1, outside pyproject.toml's peft>=0.17: run make "
        f"lock; nothing was kept, details in {tmp_path / 'venv-setup.log'}"]
    assert not venv.exists()


def test_a_llama_cpp_build_that_fails_leaves_the_studio_installed_and_export_says_why(tmp_path, monkeypatch, capsys):
    """The set-up builds llama.cpp last, on its own: when it cannot (here: no registry to fetch it
    from), it says so in one line, goes on, and leaves the reason where GGUF export reads it."""
    import setup_venv

    from engine.gguf.runtime import KIT_ENV, availability

    for name in [name for name in os.environ if name.startswith("PIP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "5")
    venv = tmp_path / "venv"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-cache-dir"]
    with (tmp_path / "setup.log").open("w", encoding="utf-8") as log:
        setup_venv.build_llama(pip, venv, "0.3.36", log)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Building llama.cpp (llama-cpp-python 0.3.36) from source for GGUF export")
    # Building it, or (where this venv has it already) fetching its source for the converter.
    assert out[-1].startswith("set-up: ") and "failed: the package registry could not be reached" in out[-1]
    assert out[-1].endswith(f"the studio is installed without GGUF export (details in {tmp_path / 'setup.log'})")
    kit = venv / "share" / "lora-studio" / "llama.cpp"
    assert not kit.exists() and (kit.parent / "llama.cpp.UNAVAILABLE").is_file()
    monkeypatch.setenv(KIT_ENV, str(kit))
    found = availability()
    assert not found.ok and found.why.startswith("llama.cpp could not be built at set-up (") and "registry" in found.why
    assert found.why.endswith("run `make setup` again (it needs cmake and a C++ compiler) to build it")
