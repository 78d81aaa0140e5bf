# The two commands of the README, plus helpers.  Both install what they need (scripts/setup.sh
# is a quick no-op once .venv is current).
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: setup run test test-fast lint audit config-reference clean-data
setup:
	@scripts/setup.sh

run: setup            ## the main job, end to end, on generated demo data (local Spark)
	$(PY) jobs/pipeline.py $(ARGS)

test: setup           ## the whole test suite (real Spark, Horovod, Parquet, catalog tables)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup      ## everything but the multi-process / cluster tests
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup           ## ruff (lint + format) and mypy on the code
	.venv/bin/ruff check sales_st jobs tests bench
	.venv/bin/ruff format --check sales_st jobs tests bench
	.venv/bin/mypy

audit: setup          ## known vulnerabilities in the installed packages (pip-audit; allow-list: .pip-audit-allow.txt)
	scripts/audit.sh $(AUDIT_ARGS)

config-reference: setup  ## regenerate conf/README.md from the config dataclasses
	$(PY) -m sales_st.config.reference > conf/README.md

clean-data:
	rm -rf data
