# anonvid: `make demo` runs the main job on a generated sample corpus, `make test` runs the test suite.
# Both create .venv on first use. torch/torchvision come from PyPI as one pinned pair (see constraints.txt):
# `--isolated` keeps pip away from machine-local wheel mirrors whose CPU torch breaks torchvision and timm.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.anonvid-installed
DEMO_OUT ?= demo_out

.PHONY: demo test lint install clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "anonvid install 1/2: torch 2.13.0 + torchvision 0.28.0 (about 3 GB to download, 6 GB in $(VENV); 2-10 min)"
	$(BIN)/pip install --isolated --disable-pip-version-check -c constraints.txt "torch==2.13.0" "torchvision==0.28.0"
	@echo "anonvid install 2/2: anonvid and its dependencies (ray, timm, decord, av, torchcodec, ...)"
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e ".[test]"
	$(BIN)/python -c "import torch, torchvision, timm, decord, av, torchcodec, ray; print('anonvid env: torch', torch.__version__, '| ray', ray.__version__, '| FFmpeg for torchcodec:', torchcodec.ffmpeg_major_version or 'none (apt-get install ffmpeg)')"
	touch $@

demo: $(STAMP)
	$(BIN)/anonvid demo --out $(DEMO_OUT)

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(DEMO_OUT) .pytest_cache .ruff_cache
