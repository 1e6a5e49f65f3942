# vitrine: `make serve` starts the service, `make test` runs the tests. Both create .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
EXTRAS ?= cpu,dev

.PHONY: install serve test test-fast mutants lint models weights demo clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch is pinned in pyproject (2.13.0, the CPU wheel on these machines); GPU hosts: EXTRAS=gpu,dev
	$(BIN)/pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

serve: install
	$(BIN)/python -m api

test: install
	$(BIN)/ruff check .
	# Two pytest-xdist workers; a test file runs on one of them (its module fixtures start once).
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder

# The edit loop: everything but the tests of a real uvicorn, a process of their own (a Ray cluster too) or
# the browser.
test-fast: install
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder -m "not e2e"

# Mutation testing over [tool.mutmut] in pyproject.toml (minutes per module; not part of CI).
mutants: install
	$(BIN)/pip install --quiet mutmut==3.8.1
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut results
	$(BIN)/python -m devtools.mutation_scores

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check . || true

models/tiny: | install
	$(BIN)/python -m devtools.random_model tiny models/tiny

models/base-512: | install
	$(BIN)/python -m devtools.random_model base-512 models/base-512

models: models/tiny models/base-512

# Real weights into ./models (needs hub access; shows download progress). Then:
#   VITRINE_MODEL=models/siglip2-base-patch16-512 make serve
WEIGHTS ?= google/siglip2-base-patch16-512
weights: install
	$(BIN)/hf download $(WEIGHTS) --local-dir models/$(notdir $(WEIGHTS))

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# Offline demo: a random tiny model, 200 synthetic products indexed, then the server on them.
demo: models/tiny
	$(BIN)/python -m indexer sample data/sample-catalog --count 200
	VITRINE_MODEL=models/tiny $(BIN)/python -m indexer add data/sample-catalog/manifest.csv
	VITRINE_MODEL=models/tiny $(BIN)/python -m api
