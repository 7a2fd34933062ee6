# Two entry points for a fresh clone: `make train` (the main job) and `make test` (the suite).
# Each installs what it needs first into .venv, with torch pinned by constraints.txt.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# The main job: FactorVAE (γ = 40) on the built-in dSprites, sized to finish in about 15 minutes on a
# 2-core CPU (the CLI's own default is the paper's 300,000 steps). Rerunning continues the same run.
RUN    ?= runs/demo
STEPS  ?= 6000

.PHONY: install train test lint browser

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,ray,tensorboard]'
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	@if [ -f $(RUN)/config.json ]; then \
	  $(BIN)/factorvae train --resume $(RUN) --steps $(STEPS); \
	else \
	  $(BIN)/factorvae train --model factorvae --gamma 40 --steps $(STEPS) --out $(RUN); \
	fi
	$(BIN)/factorvae evaluate $(RUN) --metrics factorvae,mig,tc
	$(BIN)/factorvae report $(RUN)

# The browser test of the HTML report needs Chromium: install Debian's package when we can (root + apt).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium not installed: the browser test will be skipped"; }

test: $(STAMP) browser
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
