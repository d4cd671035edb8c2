# eastwest: `make run` starts the gateway with demo endpoints, `make test` runs every test.
GO        ?= go
BIN       := bin/eastwest
PKGS      := ./...
FUZZTIME  ?= 30s
# Test flags: race detector always, shuffled order, no cache.
TESTFLAGS ?= -race -shuffle=on -count=1 -timeout 20m

.PHONY: all build run test lint vet fmt-check fuzz bench generate deps tidy-check clean demo

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
lint: fmt-check vet
	$(GO) tool staticcheck $(PKGS)

test: deps lint
	$(GO) test $(TESTFLAGS) $(PKGS)

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

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

generate:
	$(GO) generate ./...

clean:
	rm -rf bin
