# Two commands from a fresh clone: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_DATE ?= 2026-11-23
DEMO_RAW ?= .demo/raw
DEMO_WORK ?= .demo/work
PYTEST_ARGS ?=

.PHONY: demo test erp-stop clean check-java

$(BIN)/markdown-pricing: setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $@

check-java:
	@spark-submit/check-java.sh

demo: check-java $(BIN)/markdown-pricing
	@test -f $(DEMO_RAW)/sales/_SUCCESS || $(BIN)/markdown-pricing generate-sample --out $(DEMO_RAW) --run-date $(RUN_DATE)
	$(BIN)/markdown-pricing run --run-date $(RUN_DATE) --raw $(DEMO_RAW) --work $(DEMO_WORK)

test: check-java $(BIN)/markdown-pricing
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

erp-stop: $(BIN)/markdown-pricing
	$(BIN)/markdown-pricing erp stop --work $(DEMO_WORK)

clean: erp-stop
	rm -rf .demo
