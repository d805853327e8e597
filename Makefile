# Nyquist: the commands a newcomer needs. `make demo` and `make test` install the OpenCL
# packages they need first (apt-get, as root) and explain what to run when not root.
SHELL := /bin/bash
SWIFT ?= swift
PACKAGES := ocl-icd-opencl-dev opencl-headers pocl-opencl-icd zlib1g-dev python3-numpy python3-pytest
CLANG ?= $(shell command -v clang)
# The C compiler for the C API's example: cc, else the Swift toolchain's clang.
EXAMPLE_CC ?= $(shell command -v cc || command -v clang)

.PHONY: deps build demo test lint-kernels bench clean parity-report doc-coverage fuzz-build fuzz fuzz-smoke lib c-example python python-test

deps:
	@missing=""; for p in $(PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || exit 1; \
	  else \
	    echo "missing packages:$$missing"; \
	    echo "run: sudo apt-get update && sudo apt-get install -y$$missing"; \
	    exit 1; \
	  fi; \
	fi

# Builds everything and fails on any warning in this package's own sources.
build: deps
	@$(SWIFT) build 2>&1 | tee .build-log.txt | grep -E "error|warning: |Compiling|Build complete" | grep -v "^\[" ; \
	status=$${PIPESTATUS[0]}; \
	if grep -E "^/.*/(Sources|Kernels|Tests|Benchmarks)/.*warning:" .build-log.txt | grep -v "/.build" ; then \
	  echo "warnings in Nyquist's sources (above): fix them"; rm -f .build-log.txt; exit 1; fi; \
	rm -f .build-log.txt; exit $$status

demo: build
	$(SWIFT) run nyquist demo

lint-kernels:
	@if [ -n "$(CLANG)" ]; then \
	  for f in Kernels/*.cl; do $(CLANG) -x cl -cl-std=CL1.2 -fsyntax-only -I Kernels $$f || exit 1; done; \
	  echo "kernels lint clean"; \
	else echo "clang not found: kernel lint skipped"; fi

test: build lint-kernels fuzz-smoke c-example python-test
	$(SWIFT) test

# The C API as lib/libnyquist.so (include/nyquist.h); a symlink to the library SwiftPM builds,
# whose own name (libNyquistC.so) is what a program linked with -lnyquist loads.
lib: build
	@mkdir -p lib
	@# A new file moved into place: processes that have the old one loaded keep it intact.
	@cp "$$($(SWIFT) build --show-bin-path)/libNyquistC.so" lib/.libNyquistC.so.new
	@mv -f lib/.libNyquistC.so.new lib/libNyquistC.so
	@ln -sf libNyquistC.so lib/libnyquist.so
	@echo "lib/libnyquist.so: link with -Iinclude -Llib -lnyquist -lOpenCL -Wl,-rpath,<this folder>/lib"

# The Python package (python/nyquist, ctypes over lib/libnyquist.so) needs only the library.
python: lib

# The Python tests (Debian's python3-numpy and python3-pytest, installed by `make deps`).
python-test: python
	cd python && python3 -m pytest -q tests

# Builds and runs examples/c/pooling.c on the C API (checks its results against the reference).
c-example: lib
	@$(EXAMPLE_CC) -std=c11 -Wall -Wextra -Werror examples/c/pooling.c -Iinclude -Llib -lnyquist -lOpenCL -lm \
	  -Wl,-rpath,"$(CURDIR)/lib" -o .build/c-example
	.build/c-example

# Regenerates docs/parity.md from one run of the parity suite (Tests/ParityTests/ParityReport.swift
# collects the figures); the file is replaced only when the suite passes.
parity-report: build
	@report=$$(mktemp); \
	if NYQUIST_PARITY_REPORT=$$report $(SWIFT) test --filter ParityTests && [ -s $$report ]; then \
	  chmod 644 $$report && mv $$report docs/parity.md && echo "docs/parity.md regenerated"; \
	else rm -f $$report; echo "parity suite failed or wrote nothing: docs/parity.md left as it was"; exit 1; fi

# Lists public symbols of the library modules without a doc comment of their own; fails if any.
doc-coverage:
	@graphs="$$(dirname "$$($(SWIFT) build --show-bin-path)")/symbolgraph"; rm -rf "$$graphs"; \
	$(SWIFT) package dump-symbol-graph --minimum-access-level public > /dev/null || exit 1; \
	$(SWIFT) docs/tools/doc-coverage.swift "$$graphs" Sources

bench: deps
	$(SWIFT) run -c release nyquist-bench

clean:
	rm -rf .build lib

# libFuzzer targets for the NPY, safetensors and PNG decoders (Fuzz/README.md). The parsers are
# compiled straight from Sources with swiftc (SwiftPM has no fuzzer mode); everything goes to
# .build-fuzz/. `make fuzz` runs each target for FUZZ_SECONDS on its corpus (seeded from the
# test fixtures); `fuzz-smoke` (part of `make test`) runs each for a few seconds so that the
# targets keep building. A crash, leak or memory-limit breach fails make and leaves the input
# in .build-fuzz/artifacts/.
FUZZ_SECONDS ?= 600
FUZZ_DIR := .build-fuzz
FUZZ_TARGETS := npy safetensors png
SWIFTC ?= swiftc
FUZZ_SWIFTFLAGS := -sanitize=fuzzer,address -parse-as-library -swift-version 6 -O -g

FUZZ_CORE_SOURCES := $(wildcard Sources/NyquistCore/*.swift)
FUZZ_IMAGE_SOURCES := $(wildcard Sources/NyquistImage/*.swift)
# gold warns about every ASan helper symbol of a static library; those lines are noise.
FUZZ_QUIET := 2>&1 | { grep -v "Cannot export local symbol" || true; }; exit $${PIPESTATUS[0]}

fuzz-build: $(FUZZ_DIR)/fuzz-npy $(FUZZ_DIR)/fuzz-safetensors $(FUZZ_DIR)/fuzz-png

$(FUZZ_DIR)/libNyquistCore.a: $(FUZZ_CORE_SOURCES)
	@mkdir -p $(FUZZ_DIR)/modules
	$(SWIFTC) $(FUZZ_SWIFTFLAGS) -module-name NyquistCore -emit-module \
	  -emit-module-path $(FUZZ_DIR)/modules/NyquistCore.swiftmodule \
	  -emit-library -static -o $@ $(FUZZ_CORE_SOURCES) $(FUZZ_QUIET)

$(FUZZ_DIR)/libNyquistImage.a: $(FUZZ_IMAGE_SOURCES) $(FUZZ_DIR)/libNyquistCore.a
	$(SWIFTC) $(FUZZ_SWIFTFLAGS) -module-name NyquistImage -emit-module -I $(FUZZ_DIR)/modules -I Sources/CZlib \
	  -emit-module-path $(FUZZ_DIR)/modules/NyquistImage.swiftmodule \
	  -emit-library -static -o $@ $(FUZZ_IMAGE_SOURCES) $(FUZZ_QUIET)

$(FUZZ_DIR)/fuzz-npy: Fuzz/NPYFuzz.swift $(FUZZ_DIR)/libNyquistCore.a
	$(SWIFTC) $(FUZZ_SWIFTFLAGS) -I $(FUZZ_DIR)/modules $< -L $(FUZZ_DIR) -lNyquistCore -o $@ $(FUZZ_QUIET)

$(FUZZ_DIR)/fuzz-safetensors: Fuzz/SafetensorsFuzz.swift $(FUZZ_DIR)/libNyquistCore.a
	$(SWIFTC) $(FUZZ_SWIFTFLAGS) -I $(FUZZ_DIR)/modules $< -L $(FUZZ_DIR) -lNyquistCore -o $@ $(FUZZ_QUIET)

$(FUZZ_DIR)/fuzz-png: Fuzz/PNGFuzz.swift $(FUZZ_DIR)/libNyquistImage.a $(FUZZ_DIR)/libNyquistCore.a
	$(SWIFTC) $(FUZZ_SWIFTFLAGS) -I $(FUZZ_DIR)/modules -I Sources/CZlib $< \
	  -L $(FUZZ_DIR) -lNyquistImage -lNyquistCore -lz -o $@ $(FUZZ_QUIET)

# Seeds: the fixtures, plus Fuzz/seeds/TARGET/ when present; Fuzz/TARGET.dict is passed as a
# libFuzzer dictionary. Corpora persist across runs.
fuzz: fuzz-build
	@mkdir -p $(FUZZ_DIR)/artifacts; \
	for target in $(FUZZ_TARGETS); do \
	  corpus=$(FUZZ_DIR)/corpus-$$target; mkdir -p $$corpus; \
	  case $$target in \
	    npy) cp -n Tests/NyquistCoreTests/Fixtures/*.npy $$corpus/ ;; \
	    safetensors) cp -n Tests/NyquistCoreTests/Fixtures/*.safetensors $$corpus/ ;; \
	    png) cp -n Tests/NyquistImageTests/Fixtures/*.png $$corpus/ ;; \
	  esac; \
	  if [ -d Fuzz/seeds/$$target ]; then cp -n Fuzz/seeds/$$target/* $$corpus/ 2>/dev/null; fi; \
	  echo "fuzzing $$target for $(FUZZ_SECONDS) s (corpus $$corpus)"; \
	  dict=""; if [ -f Fuzz/$$target.dict ]; then dict=-dict=Fuzz/$$target.dict; fi; \
	  $(FUZZ_DIR)/fuzz-$$target -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -max_len=65536 $$dict \
	    -timeout=30 -print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/artifacts/$$target- \
	    $$corpus > $(FUZZ_DIR)/$$target.log 2>&1; status=$$?; \
	  grep -E "cov: " $(FUZZ_DIR)/$$target.log | tail -1; \
	  grep -E "^Done |stat::(number_of_executed_units|peak_rss_mb)" $(FUZZ_DIR)/$$target.log; \
	  echo "corpus: $$(ls $$corpus | wc -l) files"; \
	  if [ $$status -ne 0 ]; then tail -40 $(FUZZ_DIR)/$$target.log; echo "fuzz-$$target failed (log: $(FUZZ_DIR)/$$target.log)"; exit 1; fi; \
	done

fuzz-smoke:
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=5
