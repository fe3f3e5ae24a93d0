# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BACKFILL_DAYS ?= 28
# Test processes: most tests wait on servers, subprocesses and the database, so a few more than
# the cores keeps them busy (TEST_WORKERS=0 runs the suite in one process).
TEST_WORKERS ?= 3

.PHONY: demo run test test-fast bench bench-smoke screenshot clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)  ## web app + CoAP gateway + scheduler + simulator, with simulated history (a week kept raw)
	PARKING_RAW_RETENTION_DAYS=$${PARKING_RAW_RETENTION_DAYS:-7} PARKING_MAX_BACKLOG_DAYS=$${PARKING_MAX_BACKLOG_DAYS:-7} \
	  $(BIN)/parking-run --simulate --backfill-days $(BACKFILL_DAYS)

run: $(STAMP)  ## the same for real sensors: no simulator
	$(BIN)/parking-run

test: $(STAMP)  ## the whole suite (SQLite, and PostgreSQL when reachable)
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

bench: $(STAMP)  ## benchmarks (by hand; minutes)
	$(BIN)/python -m bench

bench-smoke: $(STAMP)
	$(BIN)/python -m bench --smoke

screenshot: $(STAMP)  ## docs/map.png from a running instance (make demo in another shell)
	$(BIN)/python docs/screenshot.py

clean:
	rm -rf $(VENV) instance .pytest_cache .hypothesis
