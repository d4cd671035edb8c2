# eastwest: `make run` starts the gateway with demo endpoints, `make test` runs every test.
GO        ?= go
BIN       := bin/eastwest
PKGS      := ./...
FUZZTIME  ?= 30s
# Test flags: race detector always, shuffled order, no cache, one package at a
# time (two cores: parallel race-enabled suites starve each other).
TESTFLAGS ?= -race -shuffle=on -count=1 -timeout 20m -p 1

.PHONY: all build run test lint vet fmt-check fuzz bench generate deps tidy-check clean demo bench-deps bench-smoke generate-check

all: build

deps:
	$(GO) mod download

build: deps
	$(GO) build -trimpath -o $(BIN) ./cmd/eastwest

# Gateway on its embedded default settings plus demo TLS endpoints in two
# localities; prints a command to paste in another terminal.
run: build
	./$(BIN) demo

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go') 2>/dev/null); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

tidy-check:
	$(GO) mod tidy -diff

# staticcheck is pinned as a Go tool in go.mod, fetched from the module proxy.
lint: fmt-check vet tidy-check
	$(GO) tool staticcheck $(PKGS)

# Real peers for the benchmark smoke test: HAProxy and nginx with its stream
# module, from Debian's packages (CI runs as root).
bench-deps:
	@if ! command -v haproxy >/dev/null || ! command -v nginx >/dev/null || ! test -f /usr/lib/nginx/modules/ngx_stream_module.so; then \
	  echo "installing haproxy and nginx for the benchmark smoke test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy nginx libnginx-mod-stream >/dev/null; \
	fi

# The forwarder-sensitive suites run again with each kernel forwarder.
FORWARDER_PKGS := ./proxy ./cmd/eastwest

test: deps lint build bench-deps
	EWBENCH_EASTWEST=$(CURDIR)/$(BIN) $(GO) test $(TESTFLAGS) $(PKGS)
	for f in sockmap auto; do EASTWEST_TEST_FORWARDER=$$f $(GO) test $(TESTFLAGS) $(FORWARDER_PKGS) || exit 1; done
	# Allocation counts need a build without the race detector.
	$(GO) test -count=1 -run '^TestNoAllocation' ./ebpf

# Every benchmark target and mode for a moment: proves the harness works.
bench-smoke: build bench-deps
	EWBENCH_EASTWEST=$(CURDIR)/$(BIN) $(GO) test -race -count=1 -run '^TestSmoke$$' -v ./bench

# Every fuzz target for FUZZTIME each (seeds alone run in `make test`).
fuzz:
	@for pkg in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

# Two clusters in network namespaces, locality failover (root, ip, go).
demo: build
	bash deploy/demo/netns-demo.sh $(BIN)

# Go micro-benchmarks, then the full side-by-side run (several minutes;
# writes bench/results/). ewbench -h lists its options (-taskset, -rounds).
bench: build bench-deps
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)
	$(GO) run ./bench/cmd/ewbench -eastwest $(CURDIR)/$(BIN)

# eBPF objects from ebpf/bpf/*.c with the pinned bpf2go; clang from Debian.
generate:
	@command -v clang >/dev/null && test -d /usr/include/bpf || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang llvm libbpf-dev >/dev/null)
	$(GO) generate ./...

# The committed eBPF objects are what the C source generates.
generate-check: generate
	git diff --exit-code -- ebpf/

clean:
	rm -rf bin
