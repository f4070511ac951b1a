# The two commands a newcomer needs: `make run` and `make test`.
# Both create .venv and install what they need on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test check lint typecheck clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[postgres,server,dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/jobyard serve

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(STAMP)
	$(BIN)/mypy src

test: $(STAMP) lint typecheck
	$(BIN)/pytest

# `make check`: the fast inner loop while editing, under a minute: lint, types, and the tests on
# SQLite alone, without the slow ones (real processes, browsers, servers waited out; the list is
# SLOW in tests/conftest.py). `make test` still runs everything, on both stores.
check: $(STAMP) lint typecheck
	$(BIN)/pytest -q -m "not slow" -k "not postgres"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# `make bench`: jobyard against PgQueuer and Procrastinate on the PostgreSQL at 127.0.0.1:5432
# (user postgres), plus jobyard on SQLite, a pgbench baseline and a memory check; about 20
# minutes. Not part of `make test`. Results go to bench/results/<timestamp>.json and the report
# to docs/benchmarks.md (a QUICK run's report goes to bench/results/ instead).
#   make bench QUICK=1                   1 run per scenario, small N (a few minutes)
#   make bench SYSTEMS=jobyard           only jobyard on PostgreSQL; the report takes the other
#                                        systems' numbers from the latest results that have them
#   make bench SCENARIOS=S1,S6 RUNS=5    systems: jobyard pgqueuer procrastinate jobyard-sqlite;
#                                        scenarios: S1 S2 S3 S4 S5 S6 pgbench floor memory
#   make bench JOBYARD_REF=HEAD          jobyard's src/ as committed at a git ref, not as edited
PEERS_VENV := bench/.venv-peers
PEERS_STAMP := $(PEERS_VENV)/.installed
BENCH_FLAGS = $(if $(QUICK),--quick) $(if $(SYSTEMS),--systems $(SYSTEMS)) \
	$(if $(SCENARIOS),--scenarios $(SCENARIOS)) $(if $(RUNS),--runs $(RUNS)) \
	$(if $(JOBYARD_REF),--jobyard-ref $(JOBYARD_REF))

.PHONY: bench

$(PEERS_STAMP): bench/requirements-peers.txt
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install --quiet --upgrade pip
	$(PEERS_VENV)/bin/pip install --quiet -r bench/requirements-peers.txt
	touch $(PEERS_STAMP)

bench: $(STAMP) $(PEERS_STAMP)
	$(BIN)/python bench/run.py $(BENCH_FLAGS) --report

# `make chaos`: the chaos suite's full profile (docs/reliability.md): three worker processes on
# a private PostgreSQL 15 cluster of its own (never the shared server), every fault, a
# 100,000-job backlog under a long transaction, two workers under faketime ±90 s, SIGKILLs on
# SQLite; about 10 minutes. Its quick profile runs in `make test`. Reports go to
# tests/chaos/results/. JOBYARD_CHAOS_SEED=n replays another schedule; JOBYARD_REF=HEAD tests
# jobyard's src/ as committed at a git ref rather than as edited.
.PHONY: chaos

chaos: $(STAMP)
	@command -v faketime >/dev/null 2>&1 || { echo "installing faketime"; apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q faketime; }
	@src=""; if [ -n "$(JOBYARD_REF)" ]; then src=$$(mktemp -d) && \
		git archive "$(JOBYARD_REF)" src | tar -x -C "$$src" && src="$$src/src" && \
		echo "chaos against src/ at $(JOBYARD_REF)"; fi; \
	env $${src:+PYTHONPATH=$$src} JOBYARD_CHAOS=full $(BIN)/pytest tests/chaos -q
