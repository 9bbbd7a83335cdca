# prunekit: `make run` and `make test` set everything up on a fresh machine (idempotent).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.setup-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)
TORCH   := torch==2.14.1 torchvision==0.29.1
FMNIST  := /usr/share/datasets/fashion-mnist

.PHONY: setup run test test-all bench bench-accuracy lint data clean

setup: $(STAMP)

$(STAMP):
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH) -e '.[dev,onnx]'
	rm -f $(VENV)/.setup-*
	touch $(STAMP)

# Fashion-MNIST from Debian's package, where apt is there (optional: the default job uses embedded data)
data:
	@test -d $(FMNIST) || (command -v apt-get >/dev/null && \
	  (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1)) || \
	  echo "note: Fashion-MNIST not installed (apt install dataset-fashion-mnist); only needed for benchmarks")

run: setup
	$(BIN)/prunekit compare --strategies chex,magnitude,random --dense

# pytest-xdist workers (each takes whole test files: module fixtures are built once); the suite is mostly
# subprocesses of the CLI, so two workers on two cores take about half the time of one
WORKERS ?= 2

test: setup data
	$(BIN)/python -m pytest -q -x -n $(WORKERS) --dist loadfile --timeout=900

test-all: setup data
	$(BIN)/python -m pytest -q -m "slow or not slow" -n $(WORKERS) --dist loadfile --timeout=3600

# every published page of docs/results/, with the commands printed in them (about 11.5 hours on 2 CPU cores,
# 9.2 of them Fashion-MNIST training; `benchmarks/run_all.py --list` shows them, `--skip-long` leaves out the
# pages over 30 minutes: about 1.5 hours)
bench: setup data
	$(BIN)/python benchmarks/run_all.py

# about an hour on 2 CPU cores (two runs at a time): the settings of docs/results/fmnist_accuracy.md
bench-accuracy: setup data
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/fmnist_accuracy.py --epochs 6 --train-subset 5000 \
	  --test-subset 2000 --seeds 3 --threads 1 --param chex.delta_T=0.5 --jobs 2

lint: setup
	$(BIN)/ruff check prunekit graphs strategies tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
