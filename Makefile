# Two commands on a fresh machine with Python 3.11+: `make demo` and `make test`.
# Both create .venv and install the project with its dev extra on first use.

PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && echo $$p && break; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint check-js demo demo-runs gateway soak bench bench-gateway bench-compare bench-instructions bench-workflows bench-topologies bench-gevent clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is needed (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check notifier tasks tests examples bench
	$(BIN)/mypy

# The suite mostly waits on real processes (Redis, Celery workers, failovers): alone it keeps
# about half of one core busy, so three workers fit on two cores and cut its time by more than
# half. Each file stays on one worker (its module fixtures start once).
TEST_WORKERS ?= 3
test: lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(TEST_ARGS)

demo: $(STAMP)
	$(BIN)/python -m tasks.demo

# The browser client's types (clients/js/index.d.ts), compiled in strict mode with a typed usage
# file that also holds mistakes they must refuse. TypeScript comes from the npm registry, at the
# version clients/js/package-lock.json pins, into clients/js/node_modules.
JS := clients/js
$(JS)/node_modules/.package-lock.json: $(JS)/package-lock.json
	npm ci --prefix $(JS) --prefer-offline --no-audit --no-fund --loglevel=error

check-js: $(JS)/node_modules/.package-lock.json
	$(JS)/node_modules/.bin/tsc -p $(JS)/check --strict --noEmit

# Not in CI: the demo DEMO_RUNS times with PYTHONUNBUFFERED=1 and as many times without; the
# pass count per mode.
DEMO_RUNS ?= 20
demo-runs: $(STAMP)
	$(BIN)/python -m bench.demo_runs --runs $(DEMO_RUNS)

# The browser gateway (SSE, WebSocket, the page): [gateway] host and port, or GATEWAY_ARGS.
gateway: $(STAMP)
	$(BIN)/notifier gateway $(GATEWAY_ARGS)

# Not in CI: the notifier against the alternatives, side by side on one Redis; writes
# bench/results/ (markdown table, JSON, PNG). Quicker: make bench BENCH_ARGS="--runs 1 --quick".
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# Not in CI: 10,000 SSE subscribers at 1,000 events/s on `notifier gateway` with 1 and N workers
# and on a plain sse-starlette endpoint with one Redis subscription per page, one after another
# in one run: p99 publish->client, CPU, and the best rate each holds within a 50 ms p99; writes
# bench/results/gateway.md and .json. About 15 minutes; BENCH_ARGS="--no-search" skips the
# rates, "--profile" adds py-spy, "--baseline DIR" runs an earlier checkout's gateway beside
# (an A/B). Installs the bench extra (sse-starlette, py-spy). Arguments: python -m bench.gateway
# --help.
bench-gateway: $(BENCH_STAMP)
	$(BIN)/python -m bench.gateway $(BENCH_ARGS)

# Not in CI: the working tree against REF (a commit), alternately in one run, at least five
# rounds (ROUNDS=N): caller p50s against the floor, throughput against redis-benchmark's
# ceiling with a live subscriber, CPU per event; each side's median and range and their ratio;
# writes bench/results/compare.md. REF is checked out into a temporary worktree. TREE=<commit>
# measures that commit in the working tree's place; QUEUE="progress_interval=0" sets [queue]
# keys on both sides. About 40 s for five rounds.
ROUNDS ?= 5
bench-compare: $(STAMP)
	@test -n "$(REF)" || { echo "usage: make bench-compare REF=<commit> [TREE=<commit>] [ROUNDS=5] [QUEUE=key=value]"; exit 2; }
	$(BIN)/python -m bench.compare --ref $(REF) --rounds $(ROUNDS) $(if $(TREE),--tree $(TREE)) $(foreach q,$(QUEUE),--queue $(q))

# Not in CI: instructions per publish_failed, counted by callgrind (valgrind must be installed),
# for the working tree and REF if given; CALLER_ONLY=1 sends nothing. A few minutes.
bench-instructions: $(STAMP)
	$(BIN)/python -m bench.instructions $(if $(REF),--ref $(REF)) $(if $(CALLER_ONLY),--caller-only)

# Not in CI (and part of make bench): a group of 500 on a real prefork worker with the workflow
# channel on and off in the sending process, alternately: worker and Redis CPU per task, wall
# time, and the send; writes bench/results/workflows.md and .json. About a minute.
bench-workflows: $(STAMP)
	$(BIN)/python -m bench.workflows $(BENCH_ARGS)

# Sentinel and Cluster on topologies started here: a plain Sentinel client's loss through a
# failover beside ours, the cost of WAIT, a 3-master cluster against one Redis from 2 processes;
# writes bench/results/topologies.md. Arguments: python -m bench.topologies --help.
bench-topologies: $(STAMP)
	$(BIN)/python -m bench.topologies $(BENCH_ARGS)

# The notifier under gevent beside a plain process and a sender on the hub: the publish call's
# cost, a ticking greenlet's lateness at 5,000 events/s; writes bench/results/gevent.md.
bench-gevent: $(STAMP)
	$(BIN)/python -m bench.gevent_pool $(BENCH_ARGS)

# Not in CI: 10 minutes at 5,000 events/s with Redis killed every 60 s and the link reset every
# 45 s; every event accounted for, and the caller's worst calls beside the machine's own stalls.
# Shorter: make soak SOAK_ARGS="--minutes 2".
soak: $(STAMP)
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info $(JS)/node_modules
