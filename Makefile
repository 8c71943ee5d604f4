# Two commands: `make demo` and `make test`. Both create .venv when it is missing.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export SHIPDELAY_DATA_DIR ?= data

.PHONY: demo test bench install clean lint browser

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv

# Bytecode is compiled at install: with PYTHONDONTWRITEBYTECODE set (as on some CI machines)
# nothing would cache it, and every process would compile its imports again (~10 s each).
$(STAMP): $(BIN)/python pyproject.toml Makefile
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e ".[all,dev]"
	$(BIN)/python -m compileall -q shipdelay features training serving registry > /dev/null
	touch $(STAMP)

install: $(STAMP)

# The main job end to end on the embedded default: two simulated years (6,000 of the newest
# shipments with the simulator's ceiling, enough to judge the model by journey stage), the
# feature store, a trained and registered model, the promotion gate, the prediction service
# asked about a few in-flight shipments, one nightly batch run, and the stream scorer replaying
# the newest tracking events through the embedded Kafka cluster; last, the cockpit served once
# for its Now page and stopped (the line it prints says how to open it for real).
demo: $(STAMP)
	$(BIN)/shipdelay simulate --shipments 80000 --start 2024-03-01 --days 730 --seed 7 --ceiling-shipments 6000
	$(BIN)/shipdelay features build
	$(BIN)/shipdelay train
	$(BIN)/shipdelay promote
	$(BIN)/shipdelay ask
	$(BIN)/shipdelay score-batch
	$(BIN)/shipdelay check-parity
	$(BIN)/shipdelay stream-demo --events 20000
	$(BIN)/shipdelay cockpit --check

# Tests get their own data folder: they never touch ./data (the notebook runs in
# tests/integration/test_notebook_aliases.py, on a trained world). Three test workers share the
# two cores: many tests wait on servers, consumers and commands they started, and a third worker
# fills that time (the `trained` world is built once and copied to each worker). Each fits and
# predicts with one OpenMP thread. Files are dealt out in collection order, the longest first
# (tests/conftest.py's LONGEST_FILES), not xdist's fewest-tests-last.
test: $(STAMP) browser
	SHIPDELAY_DATA_DIR=$$(mktemp -d)/data OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 3 --dist loadfile \
		--no-loadscope-reorder tests

# The cockpit's browser tests drive Debian's headless Chromium: installed here when missing
# and this is root, else one sentence saying how (the tests then fail under CI=true).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then apt-get install -y -qq chromium chromium-driver >/dev/null \
			|| { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }; \
		else echo "Chromium is missing: the browser tests need it; run 'sudo apt-get install -y chromium chromium-driver'."; fi; }

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf data .pytest_cache
