# se_detectron: the two commands a newcomer runs are `make demo` and `make test`.
# Both run `make setup` first (idempotent: a project-local .venv with torch, Detectron2 and this
# package). To use an existing environment that already has torch + Detectron2, pass
# VENV=/path/to/env (set-up then leaves torch and Detectron2 alone).

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.se_detectron-setup
DEMO_DIR ?= output/demo
DEMO_CONFIG ?= configs/Synthetic/faster_rcnn_SE_R_50_FPN_synthetic.yaml
# extra KEY VALUE overrides for the demo's training, e.g. DEMO_OPTS="SOLVER.MAX_ITER 3000"
DEMO_OPTS ?=

.PHONY: setup demo test lint format clean benchmark

setup: $(STAMP)

$(STAMP): setup.py pyproject.toml requirements/*.txt scripts/setup_env.sh scripts/install_detectron2.sh
	bash scripts/setup_env.sh $(VENV)
	touch $@

# Train SE-ResNet-50-FPN Faster R-CNN on the bundled synthetic dataset, evaluate (box AP), then
# draw predictions on validation images. Everything lands in $(DEMO_DIR).
demo: setup
	$(PY) tools/train_net.py --config-file $(DEMO_CONFIG) OUTPUT_DIR $(DEMO_DIR) $(DEMO_OPTS)
	$(PY) tools/demo.py --config-file $(DEMO_DIR)/config.yaml \
		--input $$($(PY) -c "from se_detectron.data import default_synthetic_root as r; print(r())")/val \
		--max-images 8 --output $(DEMO_DIR)/predictions --opts MODEL.WEIGHTS $(DEMO_DIR)/model_final.pth
	@echo "demo outputs in $(DEMO_DIR): model_final.pth metrics.json curves.png final_results.json predictions/"

# SE-ResNet-50 vs ResNet-50 speed and memory (README "Performance"; ~40 min, on an idle machine).
benchmark: setup
	$(PY) tools/benchmark.py --compile --output output/benchmark/benchmark.json

test: setup
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf output .pytest_cache .ruff_cache
