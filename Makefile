# Two commands for a fresh clone: `make quickstart` (set up, then run the quickstart recipe) and
# `make test` (set up, then run the tests). Setup makes .venv once per lock: a second run reuses it.
# Python 3.11: the pinned TVM wheels are built for it
PYTHON ?= $(shell command -v python3.11 || echo python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)
# PyPI's torch for Linux is the CUDA build (several GB of CUDA libraries): the CPU build comes from
# PyTorch's own index first. Where that index cannot be reached, pip's configured sources serve.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: setup quickstart test bench

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else \
		"tvmharness needs Python 3.11 (its pinned TVM wheels are built for it); " + sys.version.split()[0] + " is $(PYTHON): run make PYTHON=python3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --disable-pip-version-check -q --retries 0 --no-deps -c requirements.lock \
		--index-url $(TORCH_INDEX) torch torchvision 2>$(VENV)/torch-index.log \
		|| echo "note: torch did not install from $(TORCH_INDEX) ($$(tail -n 1 $(VENV)/torch-index.log)): it comes from pip's own sources (on Linux, PyPI's is the CUDA build)"
	$(BIN)/python -m pip install --disable-pip-version-check -q -c requirements.lock -e '.[test]'
	@rm -f $(VENV)/.installed-*
	@touch $@

quickstart: setup
	$(BIN)/tvmharness run recipes/quickstart.toml

test: setup  # the slowest tests named at the end: the suite is kept well under half an hour
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=15

bench: setup
	$(BIN)/python benchmarks/baseline_x86.py
