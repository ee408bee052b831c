# vidcache: `make run` serves on the embedded defaults, `make test` runs every
# test against real FFmpeg, SQLite and PostgreSQL, `make bench` measures.
# Each target installs what it needs first, so a fresh Debian machine works.

SHELL := /bin/bash
# Outside the clone, so CI runs and fresh clones reuse one build.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/vidcache/target
CARGO ?= cargo

.PHONY: deps test-deps postgres build release run test test-unit bench fmt lint lint-check clean-test-dbs vendor

## Install system packages (FFmpeg dev libraries, clang for bindgen, ...) if missing.
deps:
	@bash .ci/deps.sh

## What the tests and benchmarks also run: upload clients, the Kafka client, Chromium.
test-deps:
	@bash .ci/deps.sh --test

## PostgreSQL on 127.0.0.1:5432 with trust auth for the test suite.
postgres:
	@bash .ci/ensure-postgres.sh

build: deps
	$(CARGO) build --workspace

release: deps
	$(CARGO) build --release --bin vidcache

## Build in release mode and serve on 127.0.0.1:8020 (SQLite and disk under ./data).
run: release
	$(CARGO_TARGET_DIR)/release/vidcache serve $(if $(CONFIG),--config $(CONFIG),)

## Every test: unit tests and the HTTP integration suite on SQLite and PostgreSQL.
## (No doc tests: there are none, and their empty summary would close the output.)
## A real Kafka-protocol broker (tansu) and a real S3 server (s3s-fs) are
## started for the run and stopped after.
TEST_LOG ?= $(CARGO_TARGET_DIR)/make-test.log
KAFKA_DIR ?= $(CARGO_TARGET_DIR)/test-kafka
S3_DIR ?= $(CARGO_TARGET_DIR)/test-s3
test: test-deps postgres clean-test-dbs lint-check
	@bash .ci/kafka.sh install
	@bash .ci/s3.sh install
	@mkdir -p "$(dir $(TEST_LOG))"; set -o pipefail; status=0; \
	brokers=$$(bash .ci/kafka.sh start "$(KAFKA_DIR)") || exit 1; \
	s3=$$(bash .ci/s3.sh start "$(S3_DIR)") || { bash .ci/kafka.sh stop "$(KAFKA_DIR)"; exit 1; }; \
	trap 'bash .ci/kafka.sh stop "$(KAFKA_DIR)"; bash .ci/s3.sh stop "$(S3_DIR)"' EXIT; \
	echo "kafka broker (tansu) at $$brokers, S3 (s3s-fs) at $$s3"; \
	VIDCACHE_TEST_KAFKA=$$brokers VIDCACHE_TEST_S3=$$s3 $(CARGO) test --workspace --no-fail-fast --lib --bins --tests 2>&1 | tee "$(TEST_LOG)" || status=$$?; \
	awk '/^test result:/ { p += $$4; f += $$6 } END { printf "total: %d passed, %d failed\n", p, f }' "$(TEST_LOG)"; \
	exit $$status

## Benchmarks against references measured in the same run (see BENCHMARKS.md).
bench: release test-deps
	python3 tests/bench/upload_bench.py --binary $(CARGO_TARGET_DIR)/release/vidcache $(BENCH_ARGS)
	@command -v rustus >/dev/null || $(CARGO) install rustus --locked
	python3 tests/bench/doors_bench.py --binary $(CARGO_TARGET_DIR)/release/vidcache $(DOORS_BENCH_ARGS)
	@python3 -c "import videohash, vpdq, mediaref" 2>/dev/null || pip install videohash==3.0.1 vpdq==0.2.5 "mediaref[video]==2.1.0"
	python3 tests/bench/analysis_bench.py --binary $(CARGO_TARGET_DIR)/release/vidcache $(ANALYSIS_BENCH_ARGS)
	@command -v nginx >/dev/null && command -v wrk >/dev/null && command -v bc >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx wrk bc >/dev/null; }
	python3 tests/bench/transcode_bench.py --binary $(CARGO_TARGET_DIR)/release/vidcache $(TRANSCODE_BENCH_ARGS)
	python3 tests/bench/pages_bench.py --binary $(CARGO_TARGET_DIR)/release/vidcache $(PAGES_BENCH_ARGS)
	$(CARGO) build --release --example key_checks
	python3 tests/bench/auth_bench.py --binary $(CARGO_TARGET_DIR)/release/vidcache $(AUTH_BENCH_ARGS)
	python3 tests/bench/privacy_bench.py --binary $(CARGO_TARGET_DIR)/release/vidcache $(PRIVACY_BENCH_ARGS)
	@bash .ci/s3.sh install
	python3 tests/bench/s3_bench.py --binary $(CARGO_TARGET_DIR)/release/vidcache $(S3_BENCH_ARGS)
	python3 tests/bench/scale_bench.py --binary $(CARGO_TARGET_DIR)/release/vidcache $(SCALE_BENCH_ARGS)
	python3 tests/bench/shared_bench.py --binary $(CARGO_TARGET_DIR)/release/vidcache $(SHARED_BENCH_ARGS)

## Refresh the player libraries the pages load (client/vendor/, committed)
## from the versions pinned in client/package.json. Only needed to upgrade them.
vendor:
	cd client && npm ci --no-audit --no-fund
	cp client/node_modules/hls.js/dist/hls.min.js client/node_modules/hls.js/LICENSE client/vendor/
	mv client/vendor/LICENSE client/vendor/hls.js.LICENSE
	cp client/node_modules/dashjs/dist/modern/umd/dash.mediaplayer.min.js client/vendor/
	cp client/node_modules/dashjs/LICENSE.md client/vendor/dashjs.LICENSE.md
	sed -i '/^\/\/# sourceMappingURL=/d' client/vendor/*.js

## Drop databases left by earlier test runs.
clean-test-dbs:
	@psql -h 127.0.0.1 -U postgres -d postgres -Atc "select datname from pg_database where datname like 'vidcache_test_%'" 2>/dev/null \
	  | while read -r db; do psql -h 127.0.0.1 -U postgres -d postgres -qc "drop database if exists \"$$db\"" >/dev/null 2>&1 || true; done

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## What `make test` checks first: formatting and clippy's warnings, as errors.
lint-check: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
