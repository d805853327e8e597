# Nyquist: the commands a newcomer needs. `make demo` and `make test` install the OpenCL
# packages they need first (apt-get, as root) and explain what to run when not root.
SHELL := /bin/bash
SWIFT ?= swift
PACKAGES := ocl-icd-opencl-dev opencl-headers pocl-opencl-icd zlib1g-dev
CLANG ?= $(shell command -v clang)

.PHONY: deps build demo test lint-kernels bench clean parity-report doc-coverage

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

test: build lint-kernels
	$(SWIFT) test

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
	rm -rf .build
