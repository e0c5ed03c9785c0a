# vidkit — the two commands a new user needs: `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
# One profile only (dev with optimised dependencies, see Cargo.toml) so candle builds once.
CARGO_FLAGS ?=
PYTHON ?= python3
PEERS := target/peers
BIN := $(or $(CARGO_TARGET_DIR),target)/debug

.PHONY: deps test-deps build test demo peers bench man man-check testdata clean fmt install

# Installs the system packages the tools and tests need, only when something is missing.
deps:
	@missing=""; \
	command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || missing="$$missing ffmpeg"; \
	pkg-config --exists hdf5 2>/dev/null || missing="$$missing libhdf5-dev"; \
	pkg-config --exists libavformat libavcodec libswscale libavutil 2>/dev/null \
	  || missing="$$missing libavformat-dev libavcodec-dev libswscale-dev libavutil-dev"; \
	command -v pkg-config >/dev/null || missing="$$missing pkg-config"; \
	$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing$$missing" >&2; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

# What only the tests need: GNU parallel and Slurm (recipes/cluster.mk's jobs, run for real on a
# local single-node cluster by bins/tests/cluster.rs).
test-deps: deps
	@missing=""; \
	command -v parallel >/dev/null || missing="$$missing parallel"; \
	command -v sbatch >/dev/null && command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
	  || missing="$$missing slurm-wlm"; \
	if [ -n "$$missing" ]; then \
	  echo "test-deps: installing$$missing" >&2; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

build: deps
	$(CARGO) build $(CARGO_FLAGS) --workspace --bins

test: test-deps
	$(CARGO) test $(CARGO_FLAGS) --workspace
	$(MAKE) --no-print-directory man-check

demo: build
	@bash recipes/demo.sh $(BIN)

# The pinned Python peers (decord, PyAV, OpenCV, torch, Paddle, ...) for parity tests and benchmarks.
peers: deps
	@bash scripts/peers.sh $(PEERS)

bench: build peers
	@bash scripts/bench.sh $(BIN) $(PEERS)

# `make install PREFIX=~/.local`: the tools, their man pages, and bash/zsh/fish completions
# generated from the same clap definitions as --help and the man pages.
PREFIX ?= /usr/local
TOOLS := vsample vfeat vtrain vclassify veval vconvert vsynth vpropose vground vcaption
install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man5
	install -m 755 $(addprefix $(BIN)/,$(TOOLS)) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 man/*.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	install -m 644 man/*.5 $(DESTDIR)$(PREFIX)/share/man/man5/
	$(BIN)/vman completions bash --dir $(DESTDIR)$(PREFIX)/share/bash-completion/completions
	$(BIN)/vman completions zsh --dir $(DESTDIR)$(PREFIX)/share/zsh/site-functions
	$(BIN)/vman completions fish --dir $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d

man:
	$(CARGO) run $(CARGO_FLAGS) -q -p vidkit-cli --bin vman -- man

man-check:
	$(CARGO) run $(CARGO_FLAGS) -q -p vidkit-cli --bin vman -- man --check

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
