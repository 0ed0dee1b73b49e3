# se_detectron: the two commands a newcomer runs are `make demo` and `make test`.
# Both run `make setup` first (idempotent: a project-local .venv with torch, Detectron2 and this
# package). To use an existing environment that already has torch + Detectron2, pass
# VENV=/path/to/env (set-up then leaves torch and Detectron2 alone).

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.se_detectron-setup
DEMO_DIR ?= output/demo
# extra arguments for tools/run_demo.py, e.g. DEMO_ARGS="--rerun finetune" or trailing KEY VALUE
# overrides for the fine-tuning: DEMO_ARGS="SOLVER.MAX_ITER 5000"
DEMO_ARGS ?=

.PHONY: setup demo test test-fast test-distributed lint format clean benchmark gpu-check

setup: $(STAMP)

$(STAMP): setup.py pyproject.toml requirements/*.txt scripts/*.sh
	bash scripts/setup_env.sh $(VENV)
	touch $@

# The production path on the bundled synthetic dataset: pretrain an SE-ResNet-18 on object crops
# of the train split, convert it, fine-tune Faster R-CNN from it (FrozenBN, FREEZE_AT 2), evaluate
# box AP, draw validation pictures and print a summary. Finished stages are reused on a rerun.
# Everything lands in $(DEMO_DIR).
demo: setup
	$(PY) tools/run_demo.py --output-dir $(DEMO_DIR) $(DEMO_ARGS)

# SE-ResNet-50 vs ResNet-50 speed and memory (docs/notes/benchmarks.md; ~40 min, on an idle
# machine).
benchmark: setup
	$(PY) tools/benchmark.py --compile --output output/benchmark/benchmark.json

# On a CUDA machine, at most 8 minutes, in this order: tests/test_cuda.py, the demo with a short
# recipe (4 pretraining epochs, 600 fine-tuning iterations) and a short GPU benchmark (fp32 and
# bf16, NCHW and channels_last, ours vs timm); report in output/gpu-check/ (report.md and
# report.json, rewritten after every step; one log per step). docs/notes/benchmarks.md, "On a GPU".
gpu-check: setup
	$(PY) tools/gpu_check.py --output-dir output/gpu-check

# Every test but the multi-process interrupt-and-resume matrix (CI runs this), in two pytest-xdist
# workers: most tests wait on a tool's start-up (importing torch and Detectron2, one core) or a
# tiny model, so two workers keep both cores busy; a test file stays on one worker (its module
# fixtures run once). TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2
test: setup
	$(PY) -m pytest -q -m "not distributed" $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

# The multi-process interrupt-and-resume matrix (tests/test_resume_distributed.py: --num-gpus,
# torchrun, two localhost machines, submitit, SIGTERM / kill -9, yacs and LazyConfig; about 9 min
# on 2 cores, which would take CI past its 20-minute budget).
test-distributed: setup
	$(PY) -m pytest -q -m distributed

# The tests not marked slow (no training runs, no subprocesses of the tools): for a loop while
# editing; `make test` still runs everything.
test-fast: setup
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# The documentation site: the Markdown pages and the API reference generated from the docstrings
# (docs/conf.py), into docs/_build/html. Warnings (a broken link between pages, a docstring that
# does not parse, a reference to a name that does not exist) fail the build.
.PHONY: docs
docs: setup
	$(PY) -m sphinx -E -W --keep-going -q -b html -c docs . docs/_build/html

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf output .pytest_cache .ruff_cache docs/_build
