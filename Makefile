# FMB developer entry points. `make demo` and `make test` are the README's quick start.
# Both create .venv and install with constraints/cpu.txt, which pins the CPU build of
# torch on this kind of machine (GPU users install without it, see README), and
# constraints/test.txt, the exact Textual the TUI snapshot tests were recorded with.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --disable-pip-version-check -q -c constraints/cpu.txt
PYTEST_ARGS ?= -n 2

.PHONY: install install-models demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.core: $(BIN)/python pyproject.toml constraints/cpu.txt constraints/test.txt
	$(PIP) --upgrade pip
	$(PIP) -c constraints/test.txt -e '.[dev,ann]'
	touch $@

# Foundation-model packages with --no-deps: their unpinned torchvision would replace the
# CPU torch. The lean list below is what their model code actually imports.
$(VENV)/.models: $(VENV)/.core
	$(PIP) --no-deps astropt==2.0.9 polymathic-aion==0.0.2
	$(PIP) einops jaxtyping huggingface_hub safetensors loralib tokenizers tqdm
	touch $@

install: $(VENV)/.core
install-models: $(VENV)/.models

demo: install
	$(BIN)/fmb-engine demo

test: install-models
	$(BIN)/pytest $(PYTEST_ARGS)

bench: install-models
	for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) fmb-demo .pytest_cache
