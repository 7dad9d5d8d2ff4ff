# spoolmon: `make run` and `make test` on a fresh Debian machine (see README.md).

SHELL := /bin/bash
BASE ?= ./var
CARGO ?= cargo
# Debian packages, split by who needs them. Building and running (`make run`): the compiler and
# the librrd bindings (build-essential, pkg-config, librrd-dev, libclang-dev), rrdtool, fping (the
# fallback engine and `engine: fping`), libssl-dev (librdkafka's TLS and SASL SCRAM, built by the
# rdkafka crate against it), httping (httping orders) and iputils-ping (the example
# exec orders). The tests add their real peers: influxdb, graphite-carbon and python3-whisper
# (the sink tests' servers), haproxy (the pull tests' and bench's stats sockets), e2fsprogs
# (chattr makes a directory immutable for root), iproute2 and procps (network namespaces,
# process checks), python3, systemd and man-db (systemd-analyze verifies the units and their man:
# links), rpm (rpmspec parses the RPM spec), openssl (the node-to-node TLS tests make their
# certificates with it), dnsmasq (a real DNS server for the SRV discovery tests), curl (the API
# tests' client), prometheus and python3-prometheus-client (a real scraper and a strict
# OpenMetrics parser for /metrics), graphite-web and python3-rrdtool (the reference the render
# API is compared with), chromium (a real browser for the web page's tests) and redis-server
# (the Redis sink's and /series/' store).
RUN_PACKAGES := build-essential pkg-config librrd-dev libclang-dev libssl-dev rrdtool fping httping iputils-ping
TEST_PACKAGES := $(RUN_PACKAGES) python3 iproute2 procps \
	influxdb graphite-carbon python3-whisper e2fsprogs haproxy systemd man-db rpm openssl dnsmasq-base curl chromium \
	prometheus python3-prometheus-client graphite-web python3-rrdtool redis-server

.PHONY: run test deps test-deps build lint clean-var deb

# Installs the missing ones of the packages given (apt; sudo when not root), then checks for cargo.
define install_missing
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "Rust is missing: install it with rustup (https://rustup.rs), then run make again" >&2; exit 1; }
endef

# What building and running need.
deps:
	$(call install_missing,$(RUN_PACKAGES))

# The Kafka tests' broker: tansu, a Kafka-protocol broker from crates.io (no Debian package ships
# one), built once into ~/.cache/spoolmon-test/tansu and reused by every later run (tests find it
# there, or wherever $$TANSU says).
TANSU_VERSION := 0.6.0
TANSU_ROOT := $(HOME)/.cache/spoolmon-test/tansu

# What the tests need besides.
test-deps:
	$(call install_missing,$(TEST_PACKAGES))
	@[ -x $(TANSU_ROOT)/bin/tansu ] || { echo "building the tansu broker for the Kafka tests (once)"; \
		$(CARGO) install tansu --locked --features dynostore --version $(TANSU_VERSION) --root $(TANSU_ROOT); }

build: deps
	$(CARGO) build --release

run: build
	@mkdir -p $(BASE)/orders
	@cp -rn examples/orders/. $(BASE)/orders/
	@echo "spoolmon is starting on $(BASE) (Ctrl-C stops it)."
	@echo "  orders:   $(BASE)/orders/      (examples copied from examples/orders/)"
	@echo "  results:  $(BASE)/output/<order id>/last_result and main.rrd (rrdtool info/fetch)"
	@echo "  list:     target/release/spoolmon orders --base-dir $(BASE)"
	@echo "  show:     target/release/spoolmon show ID --base-dir $(BASE)   (e.g. ID loopback/localhost-v4)"
	@[ "$$(id -u)" = 0 ] || echo "  note: not root: native ICMP needs CAP_NET_RAW, falling back to fping"
	target/release/spoolmon run --base-dir $(BASE) --config examples/spoolmon.yaml

test: test-deps
	$(CARGO) test --all-targets

# The Debian package (binary, systemd units, config, man pages, completions) into target/debian/.
deb: test-deps
	packaging/build-deb.sh

lint: deps
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

clean-var:
	rm -rf $(BASE)
