# The two commands of the README, plus helpers.  Both install what they need (scripts/setup.sh
# is a quick no-op once .venv is current).
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: setup run test test-fast bench clean-data
setup:
	@scripts/setup.sh

run: setup            ## the main job, end to end, on generated demo data (local Spark)
	$(PY) jobs/pipeline.py $(ARGS)

test: setup           ## the whole test suite (real Spark, Horovod, Parquet, catalog tables)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup      ## everything but the multi-process / cluster tests
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

clean-data:
	rm -rf data
