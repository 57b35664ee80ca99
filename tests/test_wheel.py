"""The package as a user gets it: a wheel built offline, installed into a fresh virtual
environment and run from outside the checkout. The sample datasets, the model catalog and
the icons must come with it, and nothing may be read from the checkout."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import zipfile
from pathlib import Path

from helpers import write_messages_dataset
from smoke import run_smoke

ROOT = Path(__file__).resolve().parent.parent
STEP_TIMEOUT_S = 240  # one build, install or command; the whole test takes under a minute on two cores

PACKAGE_DATA = [
    "engine/resources/models/Llama-3.1-8B.json",
    "engine/resources/models/SmolLM2-135M-Instruct.json",
    "engine/resources/datasets/pirate_persona.jsonl",
    "engine/resources/datasets/robot_alpaca.json",
    "engine/resources/datasets/README.md",
    "engine/resources/eval/general_prompts.jsonl",
    "engine/resources/desktop/lora-studio.desktop",
    "engine/resources/desktop/icons/hicolor/scalable/apps/lora-studio.svg",
    "engine/resources/desktop/icons/hicolor/48x48/apps/lora-studio.png",
    "studio/resources/icons/pages/home.svg",
    "studio/resources/icons/pages/chat.svg",
]

# Run by the installed interpreter: where the packages and the sample datasets come from, and
# what the installed engine reads in a sample.
_WHERE = """
import json, engine, studio
from engine.data.dataset import open_dataset
from engine.data.scan import scan_dataset
from engine.paths import SAMPLE_DATASETS
sample = scan_dataset(open_dataset(SAMPLE_DATASETS / "pirate_persona.jsonl"))
print(json.dumps({"engine": engine.__file__, "studio": studio.__file__, "datasets": str(SAMPLE_DATASETS),
                  "sample": [sample.format, sample.good_rows, sample.bad_rows]}))
"""

# Run by the installed interpreter: the window's icon and the sidebar's, as drawn on screen.
_ICONS = """
import json, os, sys
from studio.app import start

app, window = start([sys.argv[0]])

def drawn(icon):
    # A missing SVG gives a null icon, or (for the tinted sidebar icons) a blank pixmap.
    image = icon.pixmap(22, 22).toImage()
    return any(image.pixelColor(x, y).alpha() for x in range(image.width()) for y in range(image.height()))

def shown():
    pages = {window.sidebar.item(row).text(): drawn(window.sidebar.item(row).icon())
             for row in range(window.sidebar.count())}
    print(json.dumps({"window_icon_null": window.windowIcon().isNull(), "window_icon_drawn": drawn(window.windowIcon()),
                      "pages": pages}), flush=True)
    os._exit(0)  # not waiting for the training libraries

window.firstShown.connect(shown)
app.exec()
"""


def test_the_wheel_installs_and_runs_outside_the_checkout(tmp_path, tiny_model_dir):
    wheel, sdist = _build(_source_copy(tmp_path / "source"), tmp_path / "dist")
    _check_wheel(wheel)
    _check_sdist(sdist)

    venv = _venv_over_test_packages(tmp_path / "venv")
    _run([venv / "bin" / "python", "-m", "pip", "install", "--no-index", "--disable-pip-version-check", str(wheel)],
         cwd=tmp_path)

    home = tmp_path / "home"
    user = _UserShell(venv, home, cwd=tmp_path)
    where = json.loads(user.run("python", "-c", _WHERE).stdout)
    for name in ("engine", "studio"):
        assert Path(where[name]).is_relative_to(venv), f"{name} comes from {where[name]}, not the installed wheel"
    assert Path(where["datasets"]).is_relative_to(Path(where["engine"]).parent), where
    format_, good_rows, bad_rows = where["sample"]
    assert format_ == "messages" and good_rows > 100 and bad_rows == 0, where["sample"]

    _check_the_command_line(user, home, tiny_model_dir, tmp_path)
    _check_serving(user, tiny_model_dir, tmp_path)
    _check_the_icons(user)


# building ------------------------------------------------------------------------------------
def _source_copy(dest: Path) -> Path:
    """The files git would commit (tracked, or new and not ignored), copied: setuptools writes
    build/ and *.egg-info beside the sources, and those must not land in the checkout."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True, timeout=60).stdout
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # a file deleted but not yet committed is still listed
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def _build(source: Path, outdir: Path) -> tuple[Path, Path]:
    _run([sys.executable, "-m", "build", "--no-isolation", "--wheel", "--sdist", "--outdir", str(outdir)],
         cwd=source)
    return next(outdir.glob("*.whl")), next(outdir.glob("*.tar.gz"))


def _check_wheel(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert set(PACKAGE_DATA) <= set(names), sorted(set(PACKAGE_DATA) - set(names))
    assert len([n for n in names if n.startswith("engine/resources/models/") and n.endswith(".json")]) >= 20
    assert not [n for n in names if n.split("/")[0] in ("tests", "bench", "resources", "packaging", "docs")]
    assert "engine/resources/datasets/make_samples.py" not in names  # a maintainer's script
    assert "[console_scripts]\nlora-studio = studio.launch:main" in entry_points


def _check_sdist(sdist: Path) -> None:
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert set(PACKAGE_DATA) <= names, sorted(set(PACKAGE_DATA) - names)
    assert {"pyproject.toml", "engine/paths.py", "studio/launch.py"} <= names


# installing ----------------------------------------------------------------------------------
def _venv_over_test_packages(venv: Path) -> Path:
    """A fresh venv that sees this one's installed dependencies, so pip needs no index.

    A folder added by a .pth line does not get its own .pth files read, so this checkout's
    editable install (a .pth file in that folder) stays invisible to the new venv. The venv
    gets no pip of its own: ensurepip's would bring an old setuptools that hides ours (torch
    requires a newer one); this venv's pip, seen through the .pth line, installs into it."""
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=venv.parent)
    site_packages = _run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         cwd=venv.parent).stdout.strip()
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(site_packages) / "test-venv-packages.pth").write_text("\n".join(ours) + "\n", encoding="utf-8")
    return venv


class _UserShell:
    """Runs the venv's programs as a user whose shell activated it, in a folder outside the checkout."""

    def __init__(self, venv: Path, home: Path, cwd: Path) -> None:
        self.bin = venv / "bin"
        self.cwd = cwd
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        self.env.update(VIRTUAL_ENV=str(venv), PATH=f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
                        LORA_STUDIO_HOME=str(home), QT_QPA_PLATFORM="offscreen",
                        XDG_DATA_HOME=str(home.parent / "xdg-data"))

    def command(self, program: str, *args: str) -> list[str]:
        return [str(self.bin / program), *args]

    def run(self, program: str, *args: str) -> subprocess.CompletedProcess:
        return _run(self.command(program, *args), cwd=self.cwd, env=self.env)

    def lora_studio_json(self, *args: str) -> list:
        """The console script's JSON output, one value per line."""
        out = self.run("lora-studio", *args, "--json").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]


def _run(command: list, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=STEP_TIMEOUT_S)
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


# using ---------------------------------------------------------------------------------------
def _check_the_command_line(user: _UserShell, home: Path, model: Path, tmp_path: Path) -> None:
    """The commands a user types first, and their --json output as a script reads it. (These are
    also the command line's own end-to-end checks: each command costs a process start of several
    seconds, so the suite runs them once, here, rather than again from the checkout.) The smoke
    every installed form gets (doctor, train, chat, the window) trains on a small dataset here,
    with a validation share, to see the run score itself too."""
    # The launcher entry of a pip install starts the console script the install put in the venv.
    [desktop] = user.lora_studio_json("desktop", "install")
    assert desktop["exec"] == str(user.bin / "lora-studio") and Path(desktop["entry"]).is_file()
    [added] = user.lora_studio_json("models", "add", str(model), "--name", "tiny")
    assert added["name"] == "tiny" and added["ready"]
    [listed] = user.lora_studio_json("models", "list")
    assert [m["name"] for m in listed["models"]] == ["starter", "tiny"]
    # The catalog is read from the package data: a catalog name is a model the estimate knows.
    [estimate] = user.lora_studio_json("estimate", "--model", "Llama-3.1-8B", "--method", "lora")
    assert estimate["model"] == "Llama-3.1-8B" and estimate["total_params"] > 7e9

    dataset = write_messages_dataset(tmp_path / "data.jsonl")  # 16 rows
    smoke = run_smoke(user.command("lora-studio"), home, user.cwd, model, env=user.env, dataset=dataset,
                      train_options=("--val-fraction", "0.25"), name="wheel-run")
    # Read from the installed package's metadata: no pyproject.toml beside it.
    assert smoke.doctor["version"] == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    # With a validation share the run scores itself against the base on the rows it held out, last.
    evaluation = smoke.events[-1]["evaluation"]
    held_out = json.loads((Path(smoke.summary["run_dir"]) / "heldout.json").read_text())["rows"]
    assert re.fullmatch(rf"ROUGE-L \d\.\d\d → \d\.\d\d on {len(held_out)} held-out rows", evaluation["headline"])
    assert len(held_out) == 4 and set(evaluation["scores"]) == {"base", "wheel-run"}
    assert 0 <= evaluation["scores"]["wheel-run"]["rouge_l"] <= 1

    [library] = user.lora_studio_json("adapters", "list")
    assert [a["name"] for a in library["adapters"]] == ["wheel-run"]


def _check_serving(user: _UserShell, model: Path, tmp_path: Path) -> None:
    """``lora-studio serve`` with the adapter just trained, called by the official client, then
    stopped as a service manager stops it; and the folder that serves the same adapter on vLLM."""
    import openai

    server = subprocess.Popen(user.command("lora-studio", "serve", "--model", str(model), "--adapter", "wheel-run",
                                           "--port", "0", "--json"),
                              cwd=user.cwd, env=user.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        serving = json.loads(server.stdout.readline())
        assert serving["event"] == "serving" and serving["models"] == ["tiny-llama", "wheel-run"], serving
        client = openai.OpenAI(base_url=serving["url"], api_key="unused", max_retries=0)
        reply = client.chat.completions.create(model="wheel-run", messages=[{"role": "user", "content": "Hello"}],
                                               max_tokens=4, temperature=0)
        assert 0 < reply.usage.completion_tokens <= 4
        logged = json.loads(server.stdout.readline())
        assert logged["event"] == "request" and logged["model"] == "wheel-run" and logged["status"] == 200
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=60)
    assert server.returncode == 0, err[-2000:]
    assert json.loads(out.splitlines()[-1]) == {"event": "stopped"}

    [export] = user.lora_studio_json("serve", "--model", str(model), "--adapter", "wheel-run",
                                     "--export-vllm", str(tmp_path / "vllm"))
    assert export["command"][:2] == ["vllm", "serve"] and "wheel-run=adapters/wheel-run" in export["command"]
    assert (tmp_path / "vllm" / "serve.sh").is_file()


def _check_the_icons(user: _UserShell) -> None:
    """The window's icon and the sidebar's, as drawn on screen (the smoke has opened the window)."""
    icons = json.loads(user.run("python", "-c", _ICONS).stdout.splitlines()[-1])
    assert not icons["window_icon_null"] and icons["window_icon_drawn"]
    assert icons["pages"] and all(icons["pages"].values()), icons["pages"]
