# Two commands from a fresh clone: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_DATE ?= 2026-11-23
DEMO_RAW ?= .demo/raw
DEMO_WORK ?= .demo/work
# The true outcomes of the demo's sample, for `make evaluate`: kept apart from the raw landing zone.
DEMO_TRUTH ?= .demo/truth
PYTEST_ARGS ?=

.PHONY: demo test test-fast lint bench erp-stop clean check-java check-jdbc evaluate images check-podman test-containers wheels

$(BIN)/markdown-pricing: setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	@touch $@

check-java:
	@spark-submit/check-java.sh

# $(call require,COMMAND,PACKAGE,WHY): checks for COMMAND; as root it installs Debian's PACKAGE with apt-get, otherwise
# it says how (WHY must hold no comma).
require = command -v $(1) >/dev/null 2>&1 || { \
  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
    echo "$(1) not found: installing $(2) with apt-get ($(3))"; \
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; \
  else \
    echo "error: $(1) not found; $(3). Install it as root: apt-get install -y $(2)" >&2; \
    exit 1; \
  fi; }; command -v $(1) >/dev/null 2>&1 || { echo "error: apt-get did not install $(2)" >&2; exit 1; }

# The report test renders the run report in headless Chromium (Debian's `chromium` package): installed here as root.
.PHONY: check-chromium
check-chromium:
	@$(call require,chromium,chromium,the report test renders the page in it)

DEMO_SAMPLE = $(BIN)/markdown-pricing generate-sample --out $(DEMO_RAW) --truth $(DEMO_TRUTH) --run-date $(RUN_DATE)

demo: check-java $(BIN)/markdown-pricing
	@test -f $(DEMO_RAW)/sales/_SUCCESS || $(DEMO_SAMPLE)
	$(BIN)/markdown-pricing seed-rules --run-date $(RUN_DATE) --raw $(DEMO_RAW) --work $(DEMO_WORK)
	$(BIN)/markdown-pricing run --run-date $(RUN_DATE) --raw $(DEMO_RAW) --work $(DEMO_WORK)

# docs/evaluation.md: forecast errors and revenue regret against the known truth on a family of worlds (issue 15).
# WORLD_<name> = its role, its run date, then generate-sample's flags. Methods are chosen on the development worlds;
# the validation worlds are only reported. Each goes through ETL and train+score only, as Luigi's TrainScore task
# (the stages of `make demo` without the publish), so outputs that exist are kept; a world whose flags changed is
# generated and run again. Train+score reads the buyers' rules from the embedded ERP it starts under the world's work
# folder; the ERP is stopped once the world is trained, whether or not it succeeded.
EVALUATION_WORLDS ?= a b c d e f g h i j
WORLD_a = development $(RUN_DATE) --countries 10 --articles 300 --weeks 60 --seed 7
WORLD_b = development 2026-05-11 --countries 16 --articles 500 --weeks 80 --seed 23
WORLD_c = development 2026-03-09 --countries 8 --articles 400 --weeks 52 --seed 11 --response exponential \
  --noise 0.4 --affinity 0.3 --stock-cover 0.8 2.0 --tiny-country-weeks 10 --tiny-carries-older
WORLD_d = development 2026-06-22 --countries 12 --articles 400 --weeks 60 --seed 13 --response linear \
  --markdown-chance 0.08 --deepest-markdown 0.3 --elasticity-shift 0.4 --elasticity-spread 1.5 --volume 0.5
WORLD_e = validation 2026-10-05 --countries 10 --articles 350 --weeks 70 --seed 29 --elasticity-shift -0.7 \
  --stock-cover 0.3 0.9 --noise 0.2 --tiny-country-weeks 14
WORLD_f = validation 2026-01-12 --countries 14 --articles 300 --weeks 56 --seed 31 --response exponential \
  --elasticity-spread 2 --markdown-chance 0.2 --affinity 0.5 --volume 2 --stock-cover 1.0 3.0 --largest-to-median 6 \
  --tiny-carries-older
WORLD_g = validation 2026-08-31 --countries 6 --articles 500 --weeks 52 --seed 37 --response linear --noise 0.8 \
  --volume 0.3 --deepest-markdown 0.5 --tiny-country-weeks 3
WORLD_h = development 2026-09-14 --countries 10 --articles 350 --weeks 60 --seed 41 --country-elasticity 0.5
WORLD_i = development 2026-09-07 --countries 10 --articles 300 --weeks 70 --seed 43 --southern 3 --noise 0.2
WORLD_j = validation 2026-10-19 --countries 8 --articles 300 --weeks 60 --seed 101 --markdown-chance 0.2 \
  --elasticity-spread 1.5 --stock-cover 1.0 2.5
WORLDS ?= .demo/worlds
EVALUATION ?= docs/evaluation.md
EVALUATION_PARTS ?= .demo/evaluation
# $(call train_score,RAW,WORK,RUN_DATE); Luigi exits 0 on a failed task unless told otherwise.
train_score = LUIGI_CONFIG_PATH=conf/luigi.cfg $(BIN)/luigi --module markdown_pricing.orchestrate.tasks TrainScore \
  --local-scheduler --retcode-task-failed 1 --retcode-missing-data 1 --run-date $(3) --raw-uri $(1) --work-uri $(2)
evaluate: $(addprefix evaluate-world-,$(EVALUATION_WORLDS))
	$(BIN)/markdown-pricing evaluation-summary $(EVALUATION_WORLDS:%=$(EVALUATION_PARTS)/world-%.md) --out $(EVALUATION)

evaluate-world-%: check-java $(BIN)/markdown-pricing
	@test -n "$(WORLD_$*)" || { echo "error: no WORLD_$* in the Makefile" >&2; exit 1; }
	@test "$$(cat $(WORLDS)/$*/flags 2>/dev/null)" = "$(WORLD_$*)" -a -f $(WORLDS)/$*/truth/_SUCCESS || { \
	  rm -rf $(WORLDS)/$* && $(BIN)/markdown-pricing generate-sample --out $(WORLDS)/$*/raw --truth $(WORLDS)/$*/truth \
	    --run-date $(wordlist 2,99,$(WORLD_$*)) && echo "$(WORLD_$*)" > $(WORLDS)/$*/flags; }
	$(call train_score,$(WORLDS)/$*/raw,$(WORLDS)/$*/work,$(word 2,$(WORLD_$*))); trained=$$?; \
	  $(BIN)/markdown-pricing erp stop --work $(WORLDS)/$*/work >/dev/null; test $$trained = 0
	$(BIN)/markdown-pricing evaluate --work $(WORLDS)/$*/work --run-id $(word 2,$(WORLD_$*)) \
	  --truth $(WORLDS)/$*/truth --role $(word 1,$(WORLD_$*)) --out $(EVALUATION_PARTS)/world-$*.md \
	  --title "World $*: generate-sample --run-date $(wordlist 2,99,$(WORLD_$*)) (and a tiny country)" >/dev/null

# Style, import contracts (.importlinter) and types (mypy.ini): checks only, they change no file.
LINTED = lib tests bench jobs setup.py
lint: $(BIN)/markdown-pricing
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/lint-imports
	$(BIN)/mypy

# Everything: the lint, then every test (pytest.ini names the markers).
test: check-java check-maven check-chromium lint $(BIN)/markdown-pricing
	$(BIN)/python -m pytest tests -m "not containers" $(PYTEST_ARGS)

# Container images (README "Images"), built with podman and no registry image: podman, runc and debootstrap come
# from Debian (installed here when run as root), then docker/build-images.sh makes a Debian base with debootstrap,
# downloads the pinned wheels and builds docker/Dockerfile on them. Its last line is the image reference.
check-podman:
	@$(call require,podman,podman,the images are built and run with it)
	@$(call require,runc,runc,podman runs the containers with it)
	@$(call require,debootstrap,debootstrap,the base image is made with it)

images: check-podman $(BIN)/markdown-pricing
	@docker/build-images.sh

# The pinned wheels alone (.images/wheels), which docker/Dockerfile installs from: before a build on a Docker host.
wheels: $(BIN)/markdown-pricing
	@docker/build-images.sh --wheels-only

# The weekly run inside the image, and on a standalone cluster of its containers (CI runs it after `make test`).
test-containers: check-java check-podman $(BIN)/markdown-pricing
	$(BIN)/python -m pytest tests -m containers $(PYTEST_ARGS)

# The lane for a quick loop while coding: no whole runs, no spark-submit, no clusters (under two minutes).
test-fast: check-java check-chromium lint $(BIN)/markdown-pricing
	$(BIN)/python -m pytest tests -m "not slow and not cluster and not hadoop and not containers" $(PYTEST_ARGS)

# The benchmark (README "Performance"): worlds of each size, every stage against its floor and its peer. Results go
# to bench/results (JSON, Markdown, PNG); worlds, runs and the bench's own PostgreSQL to $(BENCH_WORK), reused.
BENCH_SIZES ?= small,medium,skewed
BENCH_WORK ?= bench/.work
# Spark's JDBC writer (the publish stage's peer) needs the PostgreSQL driver: Debian's libpostgresql-jdbc-java.
JDBC_JAR ?= /usr/share/java/postgresql.jar
export JDBC_JAR

check-jdbc:
	@test -f $(JDBC_JAR) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "$(JDBC_JAR) not found: installing libpostgresql-jdbc-java with apt-get (Spark's JDBC writer needs it)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libpostgresql-jdbc-java >/dev/null; \
	  else \
	    echo "error: $(JDBC_JAR) not found. Install it as root: apt-get install -y libpostgresql-jdbc-java," \
	      "or set JDBC_JAR to a PostgreSQL JDBC driver jar" >&2; \
	    exit 1; \
	  fi; }

bench: check-java check-jdbc $(BIN)/markdown-pricing
	$(BIN)/python -m bench.harness --sizes $(BENCH_SIZES) --work $(BENCH_WORK) --results bench/results --jdbc-jar $(JDBC_JAR)

# Publish at a retailer's size (about 1 M predictions, 7 M candidates) on copies of the medium world's outputs, whose
# train+score `make bench BENCH_SIZES=medium` ran first: the large world's takes hours here (README "Performance").
.PHONY: bench-publish-scale
bench-publish-scale: check-java check-jdbc $(BIN)/markdown-pricing
	$(BIN)/python -m bench.publish_scale --work $(BENCH_WORK) --results bench/results --jdbc-jar $(JDBC_JAR)

# The ETL's cost per raw row at the medium and large sizes, in one process (README "Performance"): minutes, where
# `make bench BENCH_SIZES=large` trains for hours here. Worlds are generated as `make bench` does and reused.
.PHONY: bench-etl-scale
bench-etl-scale: check-java $(BIN)/markdown-pricing
	$(BIN)/python -m bench.etl_scale --work $(BENCH_WORK) --results bench/results

# Train+score against its ideal makespan and its joblib peer at medium and large, once each (largest first), with the
# largest Python worker's memory against the yarn profile's (README "Performance"): about 35 min here once the
# worlds' ETL ran (the large world's takes about 17 min more), where `make bench BENCH_SIZES=large` also runs the
# other start order, the probes and the publish peers. Worlds and their ETL output are reused.
.PHONY: bench-train-scale
bench-train-scale: check-java check-jdbc $(BIN)/markdown-pricing
	$(BIN)/python -m bench.train_scale --work $(BENCH_WORK) --results bench/results --jdbc-jar $(JDBC_JAR)

# What a stage costs on YARN around its Spark jobs (application start, containers, archive localization), cold and
# warm, against local mode: on a dev Hadoop of its own under $(BENCH_WORK)/yarn (README "Performance").
.PHONY: bench-yarn
bench-yarn: check-java check-maven $(BIN)/markdown-pricing
	$(BIN)/python -m bench.yarn --work $(BENCH_WORK)/yarn --results bench/results

# A single-node HDFS and YARN on 127.0.0.1 (README "Running on a YARN cluster"); it prints what to export.
.PHONY: hadoop hadoop-stop check-maven
check-maven:
	@$(call require,mvn,maven,the dev Hadoop fetches its jars with Maven)

hadoop: check-java check-maven $(BIN)/markdown-pricing
	$(BIN)/markdown-pricing hadoop start

hadoop-stop: $(BIN)/markdown-pricing
	$(BIN)/markdown-pricing hadoop stop

erp-stop: $(BIN)/markdown-pricing
	$(BIN)/markdown-pricing erp stop --work $(DEMO_WORK)

# A Spark History Server for the demo's past runs (their event logs are in $(DEMO_WORK)/spark-events), reachable
# from this machine only. It runs in the foreground: Ctrl-C stops it.
HISTORY_PORT ?= 18080
HISTORY_LOGS = $(abspath $(DEMO_WORK))/spark-events
.PHONY: history
history: check-java $(BIN)/markdown-pricing
	@mkdir -p $(HISTORY_LOGS)
	@echo "Spark History Server on http://127.0.0.1:$(HISTORY_PORT) reading $(HISTORY_LOGS) (Ctrl-C stops it)"
	PATH="$(abspath $(BIN)):$$PATH" SPARK_LOCAL_IP=127.0.0.1 \
	  SPARK_HISTORY_OPTS="-Dspark.history.fs.logDirectory=file://$(HISTORY_LOGS) -Dspark.history.ui.port=$(HISTORY_PORT)" \
	  $(BIN)/spark-class org.apache.spark.deploy.history.HistoryServer

clean: erp-stop
	rm -rf .demo

# What a YARN cluster runs, in dist/ (README "Running on a YARN cluster"): the pure-Python wheel (--py-files) and
# a venv-pack archive (--archives ...#environment) of a clean venv with the wheel's pinned dependencies and conf/
# under share/markdown-pricing. The wheel itself and pyspark/py4j leave the venv: the code comes from the wheel, and
# the cluster's Spark puts its own pyspark first on the executors' path. venv-pack does not copy Python itself:
# bin/python links to the $(PYTHON) that built the venv, so build with a Python at the path the nodes have it
# (`make package PYTHON=/usr/bin/python3.11`). Its --python-prefix is not used: venv-pack 0.2.0 turns a Python 3.11
# venv's link into .../bin/python3.113.11.
VERSION := $(shell cat lib/markdown_pricing/VERSION)
WHEEL := dist/markdown_pricing-$(VERSION)-py3-none-any.whl
ENV_ARCHIVE := dist/environment-$(VERSION).tar.gz
PACKAGE_VENV := build/environment-$(VERSION)
.PHONY: package
package: $(BIN)/markdown-pricing
	rm -rf $(PACKAGE_VENV) $(WHEEL) $(ENV_ARCHIVE)
	$(BIN)/python -m pip wheel --quiet --no-deps -w dist .
	$(BIN)/python -m pip install --quiet venv-pack==0.2.0
	$(PYTHON) -m venv $(PACKAGE_VENV)
	$(PACKAGE_VENV)/bin/python -m pip install --quiet $(WHEEL)
	$(PACKAGE_VENV)/bin/python -m pip uninstall --quiet --yes markdown-pricing pyspark py4j
	mkdir -p $(PACKAGE_VENV)/share/markdown-pricing
	cp -R conf $(PACKAGE_VENV)/share/markdown-pricing/
	$(BIN)/venv-pack --quiet --prefix $(PACKAGE_VENV) --output $(ENV_ARCHIVE)
	@ls -lh $(WHEEL) $(ENV_ARCHIVE)
