# XCore: the operator's and plugin author's entry points.
# Everything goes through cargo and the `xcore` binary; one target dir for all.

CARGO ?= cargo
# The repository (where this Makefile is): `make -f /path/to/Makefile add-plugin ...` works
# from an operator's folder too, with that folder's xcore.yaml, plugins/ and runtime/.
ROOT := $(dir $(abspath $(lastword $(MAKEFILE_LIST))))
# Honours CARGO_TARGET_DIR, like cargo.
TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(ROOT)target)
XCORE := $(TARGET_DIR)/debug/xcore
PORT ?= 8080

.DEFAULT_GOAL := help
.PHONY: help init new-plugin migrate build docs keys plugins run-st lint-fix logs-live logs-stats logs-errors logs-health-check run run-dev sign-plugin add-plugin rm-plugin test fuzz lint fmt bench load load-ratio clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

init: ## Check the toolchain and fetch every dependency (first step on a new machine)
	@command -v $(CARGO) >/dev/null || { echo "cargo is missing: install Rust (rustup)"; exit 1; }
	@command -v cc >/dev/null || { echo "a C compiler is missing (gcc or clang)"; exit 1; }
	$(CARGO) fetch

build: ## Build the host, the example plugins and the test fixtures (debug)
	$(CARGO) build --workspace --manifest-path $(ROOT)Cargo.toml

keys: build ## Create the development key pair keys/dev.key + keys/dev.pub (once) and trust keys/dev.pub (keys/trusted/)
	@test -f keys/dev.key || $(XCORE) keys generate --dir keys --name dev
	$(XCORE) keys trust keys/dev.pub

# `plugin build` records each library it builds (build.sig, signed with the host key in
# runtime/keys/); `plugin sign` signs each crate's sources with keys/dev.key. Under the
# default policy a plugin then loads: sources signed by a trusted key, library built here.
plugins: build keys ## Build the example plugins (each build recorded by this host), sign their sources with keys/dev.key
	$(XCORE) plugin build
	@for p in plugins/*/; do $(XCORE) plugin sign "$$p" --key keys/dev.key; done

sign-plugin: keys ## Sign one plugin folder: make sign-plugin PLUGIN=plugins/echo
	$(XCORE) plugin sign "$(PLUGIN)" --key keys/dev.key

run: plugins ## Serve the example plugins on 127.0.0.1:$(PORT) with the embedded defaults
	$(XCORE) serve --port $(PORT)

new-plugin: build ## Create a plugin crate from plugin-template/: make new-plugin PLUGIN_NAME=x [SANDBOXED=1]
	$(XCORE) plugin new "$(PLUGIN_NAME)" $(if $(SANDBOXED),--sandboxed)

add-plugin: build ## Install from git (signed sources, verified before the build): make add-plugin PLUGIN_REPO=url [PLUGIN_NAME=x] [PLUGIN_REF=tag] [STAGE=1]
	$(XCORE) plugin add "$(PLUGIN_REPO)" $(if $(PLUGIN_NAME),--name "$(PLUGIN_NAME)") $(if $(PLUGIN_REF),--ref "$(PLUGIN_REF)") $(if $(STAGE),--stage)

rm-plugin: build ## Unload and remove a plugin: make rm-plugin PLUGIN_NAME=x
	$(XCORE) plugin rm "$(PLUGIN_NAME)"

run-st: keys ## Port 8081: release build, no file watching
	$(CARGO) build --release --workspace
	$(CARGO) run --release -q -p xcore-host --bin xcore -- plugin build --release
	@for p in plugins/*/; do $(TARGET_DIR)/release/xcore plugin sign "$$p" --key keys/dev.key; done
	XCORE__PLUGINS__WATCH=false $(TARGET_DIR)/release/xcore serve --port 8081

run-dev: plugins ## Port 8082: watch plugins and their sources, rebuild and hot-reload (signatures off)
	XCORE__SECURITY__REQUIRE_SIGNATURES=none $(XCORE) serve --dev --port 8082

test: build ## Run every test (unit, integration through real HTTP, doc tests)
	$(CARGO) test --workspace

# The fuzz targets of xcore-host/fuzz/ (its own workspace and target dir). cargo-fuzz needs
# nightly compiler flags: RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them. Sanitizer
# off (the targets hunt panics in safe code); debug assertions and overflow checks on.
# New inputs go to target/fuzz-corpus/<target>; the committed seeds are read, never written.
FUZZ_TARGETS := manifest config frame route signature
FUZZ_SECONDS ?= 12
FUZZ_WORK := $(abspath $(TARGET_DIR))/fuzz-corpus
CARGO_FUZZ_VERSION := 0.13.2

fuzz: ## Run each fuzz target for FUZZ_SECONDS (default 12) from its committed corpus (installs cargo-fuzz if missing)
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz@$(CARGO_FUZZ_VERSION) --locked
	cd xcore-host/fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz build -s none
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p "$(FUZZ_WORK)/$$t"; \
	  echo "== fuzz $$t ($(FUZZ_SECONDS) s)"; \
	  (cd xcore-host/fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run -s none $$t "$(FUZZ_WORK)/$$t" corpus/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1) || exit 1; \
	done

lint: ## cargo fmt --check, clippy with warnings as errors, the layering rules (scripts/check-layers.sh), cargo deny (scripts/deny.sh)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(ROOT)scripts/check-layers.sh
	$(ROOT)scripts/deny.sh

lint-fix: ## cargo fmt, then clippy --fix
	$(CARGO) fmt --all
	$(CARGO) clippy --workspace --all-targets --fix --allow-dirty --allow-staged -- -D warnings

logs-live: build ## Follow the log (all plugins)
	$(XCORE) logs tail --follow

logs-stats: build ## Counts per level, plugin and target
	$(XCORE) logs stats

logs-errors: build ## The last errors and warnings
	$(XCORE) logs tail --level warn --lines 100

logs-health-check: build ## healthy / degraded / critical over the last 15 minutes (exit 0/1/2)
	$(XCORE) logs health

fmt: ## Format the code
	$(CARGO) fmt --all

migrate: build ## Apply the host's schema migrations to every configured database (xcore migrate run)
	$(XCORE) migrate run

docs: build ## Build the documentation site into target/site (docs/*.md, plugin pages, HTTP API)
	$(XCORE) docgen --out target/site

bench: ## Benchmarks (release): call path, latency percentiles, events, hot reload, persistence services, load shedding
	$(CARGO) build --release --workspace
	$(CARGO) bench -p xcore-host --bench call_path --bench latency --bench hooks --bench reload --bench services --bench overload

load: ## HTTP load test of `echo` with wrk (see docs/benchmarks.md)
	./scripts/load.sh

load-ratio: ## Trusted and sandboxed echo against the same server's /health: req/s and CPU per request (wrk)
	./scripts/load-ratio.sh

clean: ## Remove build outputs, runtime files and logs
	$(CARGO) clean
	rm -rf runtime logs data plugins/*/*.so plugins/*/plugin.sig plugins/*/build.sig
