# spoolmon: `make run` and `make test` on a fresh Debian machine (see README.md).

SHELL := /bin/bash
BASE ?= ./var
CARGO ?= cargo
# Debian packages the build and the tests need (fping and rrdtool are used by the tests as
# real peers; librrd-dev/libclang-dev/pkg-config build the librrd bindings; influxdb,
# graphite-carbon and python3-whisper are the sink tests' real servers, chattr (e2fsprogs) makes a
# directory read-only for root, haproxy is the pull tests' and bench's real stats socket; the
# packaging tests check the units with systemd-analyze (systemd, man-db for their man: links)
# and the RPM spec with rpmspec (rpm)).
DEB_PACKAGES := build-essential pkg-config librrd-dev libclang-dev rrdtool fping httping iputils-ping python3 iproute2 procps \
	influxdb graphite-carbon python3-whisper e2fsprogs haproxy systemd man-db rpm

.PHONY: run test deps build lint clean-var deb

deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "Rust is missing: install it with rustup (https://rustup.rs), then run make again" >&2; exit 1; }

build: deps
	$(CARGO) build --release

run: build
	@mkdir -p $(BASE)/orders
	@cp -rn examples/orders/. $(BASE)/orders/
	@echo "spoolmon is starting on $(BASE) (Ctrl-C stops it)."
	@echo "  orders:   $(BASE)/orders/      (examples copied from examples/orders/)"
	@echo "  results:  $(BASE)/output/<order id>/last_result and main.rrd (rrdtool info/fetch)"
	@echo "  list:     target/release/spoolmon orders --base-dir $(BASE)"
	@[ "$$(id -u)" = 0 ] || echo "  note: not root: native ICMP needs CAP_NET_RAW, falling back to fping"
	target/release/spoolmon run --base-dir $(BASE) --config examples/spoolmon.yaml

test: deps
	$(CARGO) test --all-targets

# The Debian package (binary, systemd units, config, man pages, completions) into target/debian/.
deb: deps
	packaging/build-deb.sh

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

clean-var:
	rm -rf $(BASE)
