# vidkit — the two commands a new user needs: `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
# One profile only (dev with optimised dependencies, see Cargo.toml) so candle builds once.
CARGO_FLAGS ?=
# A build from a clean checkout gains nothing from incremental state, which took 1.5 GB of disk
# there; `make CARGO_INCREMENTAL=1 ...` keeps it for repeated local runs.
CARGO_INCREMENTAL ?= 0
export CARGO_INCREMENTAL
PYTHON ?= python3
PEERS := target/peers
BIN := $(or $(CARGO_TARGET_DIR),target)/debug

.PHONY: deps test-deps build test demo peers bench man man-check testdata clean fmt install fuzz

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

# Coverage-guided fuzzing (issue 23) on nightly with cargo-fuzz: each target in fuzz/ for
# FUZZ_SECONDS, one job, growing testdata/fuzz/<target>/. The bound: no input may allocate more
# than 512 MB at once or 2 GB in all, nor run 10 s; what breaks it lands in fuzz/artifacts/.
# `make test` replays the corpora and regressions on stable (bins/tests/fuzz_replay.rs).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := fuzz_stream fuzz_list fuzz_predictions fuzz_safetensors fuzz_pdparams fuzz_pth
fuzz:
	@for t in $(FUZZ_TARGETS); do \
	  echo "fuzz: $$t for $(FUZZ_SECONDS) s" >&2; \
	  $(CARGO) +nightly fuzz run --fuzz-dir fuzz $$t testdata/fuzz/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 \
	    -max_len=65536 -jobs=1 -print_final_stats=1 || exit 1; \
	done

man:
	$(CARGO) run $(CARGO_FLAGS) -q -p vidkit-cli --bin vman -- man

man-check:
	$(CARGO) run $(CARGO_FLAGS) -q -p vidkit-cli --bin vman -- man --check

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
