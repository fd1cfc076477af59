# amtops — `make demo` runs the main job, `make test` runs every test with
# the real peers it needs (installed and started by scripts/).

GO        ?= go
BIN       := bin
TOOLS     := $(CURDIR)/.tools
PEERS     := $(CURDIR)/.peers
DEMO_ARGS ?=
BENCH     ?= .
BENCH_ARGS ?=
# The fleet bench `make bench` runs: small, so that it stays quick.
BENCH_FLEET_SMALL ?= --devices 200 --latency 20ms --tls-restart 2s --commit-delay 500ms --commit-wait 500ms
FUZZTIME  ?= 60s
# make chaos: e.g. CHAOS_ARGS="--devices 300" for a smaller fleet, or
# "--only partition,agent-freeze --keep"; CHAOS_NET is its loopback range.
CHAOS_ARGS ?=
CHAOS_NET  ?= 127.24.0.0/16

# Pinned code generators: proto-check fails when the committed code drifts.
PROTOC_GEN_GO      := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
PROTOC_GEN_GATEWAY := github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@v2.33.0
PROTOC_GEN_OPENAPI := github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2@v2.33.0
STATICCHECK        := honnef.co/go/tools/cmd/staticcheck@v0.8.2
GOCYCLO            := github.com/fzipp/gocyclo/cmd/gocyclo@v0.6.0

.PHONY: all build test fuzz lint check-size cyclo proto proto-check demo bench bench-fleet chaos release clean

all: build

CMDS    := ./server/cmd/amtops-server ./server/cmd/amtopsctl ./agent/cmd/amtops-agent ./internal/amtsim/cmd/amtsim
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/amtops/amtops/internal/version.stamped=$(VERSION)
DIST    := dist

build:
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ $(CMDS)

# Versioned static binaries for linux/amd64 and linux/arm64, one tarball
# each, and their SHA-256 sums.
release:
	@rm -rf $(DIST) && mkdir -p $(DIST)
	@for arch in amd64 arm64; do \
	  d=$(DIST)/amtops-$(VERSION)-linux-$$arch; mkdir -p $$d; \
	  echo "building $$d"; \
	  CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $$d/ $(CMDS) || exit 1; \
	  cp README.md configs/*.example.yaml configs/systemd/*.service $$d/; \
	  tar -C $(DIST) -czf $$d.tar.gz $$(basename $$d) && rm -rf $$d; \
	done
	cd $(DIST) && sha256sum *.tar.gz > SHA256SUMS && cat SHA256SUMS

test:
	scripts/test.sh

# Every fuzz target for FUZZTIME each (make test runs them briefly).
fuzz:
	@set -e; grep -rl --include='*_test.go' '^func Fuzz' . | sort | while read -r f; do \
	  pkg=./$$(dirname "$${f#./}"); \
	  for fn in $$(grep -o '^func Fuzz[A-Za-z0-9_]*' "$$f" | cut -d' ' -f2); do \
	    echo "== $$pkg $$fn ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) "$$pkg"; \
	  done; \
	done

lint: $(TOOLS)/staticcheck check-size cyclo
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v -e '\.pb\.go$$' -e '\.pb\.gw\.go$$')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(TOOLS)/staticcheck ./...

# No tracked file over 1 MB (a committed binary once slipped in), and no
# hand-written Go file over 700 lines outside the simulator.
check-size:
	@big=$$(git ls-files -z | xargs -0 -r stat -c '%s %n' 2>/dev/null | awk '$$1 > 1048576 {print $$2}'); \
	if [ -n "$$big" ]; then echo "tracked files over 1 MB:"; echo "$$big"; exit 1; fi
	@long=$$(git ls-files '*.go' | grep -v -e '\.pb\(\.gw\)\?\.go$$' -e '^internal/amtsim/' | xargs wc -l | awk '$$2 != "total" && $$1 > 700 {print}'); \
	if [ -n "$$long" ]; then echo "Go files over 700 lines:"; echo "$$long"; exit 1; fi

# Cyclomatic complexity: the top ten, and a failure over 25 in production
# code outside the simulator.
cyclo: $(TOOLS)/gocyclo
	@$(TOOLS)/gocyclo -top 10 -ignore '_test\.go|\.pb\.go|\.pb\.gw\.go|internal/amtsim/' .
	@over=$$($(TOOLS)/gocyclo -over 25 -ignore '_test\.go|\.pb\.go|\.pb\.gw\.go|internal/amtsim/' .); \
	if [ -n "$$over" ]; then echo "functions over complexity 25:"; echo "$$over"; exit 1; fi

$(TOOLS)/gocyclo:
	GOBIN=$(TOOLS) $(GO) install $(GOCYCLO)

$(TOOLS)/staticcheck:
	GOBIN=$(TOOLS) $(GO) install $(STATICCHECK)

$(TOOLS)/protoc-gen-go:
	GOBIN=$(TOOLS) $(GO) install $(PROTOC_GEN_GO)

$(TOOLS)/protoc-gen-go-grpc:
	GOBIN=$(TOOLS) $(GO) install $(PROTOC_GEN_GO_GRPC)

$(TOOLS)/protoc-gen-grpc-gateway:
	GOBIN=$(TOOLS) $(GO) install $(PROTOC_GEN_GATEWAY)

$(TOOLS)/protoc-gen-openapiv2:
	GOBIN=$(TOOLS) $(GO) install $(PROTOC_GEN_OPENAPI)

# The REST API's HTTP bindings live in admin_gateway.yaml, not in the
# protos; the gateway and the OpenAPI document are made from both.
GATEWAY_CONF := grpc_api_configuration=proto/amtops/v1/admin_gateway.yaml

proto: $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc $(TOOLS)/protoc-gen-grpc-gateway $(TOOLS)/protoc-gen-openapiv2
	scripts/deps.sh protoc
	protoc -I proto -I /usr/include \
	  --plugin=protoc-gen-go=$(TOOLS)/protoc-gen-go --go_out=proto --go_opt=paths=source_relative \
	  --plugin=protoc-gen-go-grpc=$(TOOLS)/protoc-gen-go-grpc --go-grpc_out=proto --go-grpc_opt=paths=source_relative \
	  proto/amtops/v1/*.proto
	protoc -I proto -I /usr/include \
	  --plugin=protoc-gen-grpc-gateway=$(TOOLS)/protoc-gen-grpc-gateway --grpc-gateway_out=proto \
	  --grpc-gateway_opt=paths=source_relative,$(GATEWAY_CONF) \
	  --plugin=protoc-gen-openapiv2=$(TOOLS)/protoc-gen-openapiv2 --openapiv2_out=proto \
	  --openapiv2_opt=$(GATEWAY_CONF),output_format=json \
	  proto/amtops/v1/admin.proto

# Untracked generated files (a new proto's output) are drift too.
proto-check: proto
	@git diff --exit-code -- proto/ || (echo "generated code is out of date: run make proto and commit"; exit 1)
	@new=$$(git ls-files --others --exclude-standard -- proto/); if [ -n "$$new" ]; then echo "generated files not committed:"; echo "$$new"; exit 1; fi

demo:
	$(GO) run ./scripts/demo $(DEMO_ARGS)

bench:
	scripts/test.sh --bench '$(BENCH)'
	$(GO) run ./scripts/benchfleet $(BENCH_FLEET_SMALL)

# The whole site as separate processes provisioning a factory fleet through
# Hello, measured; e.g. BENCH_ARGS="--devices 2000 --latency 100ms --tls-restart 20s --agents 2".
bench-fleet:
	$(GO) run ./scripts/benchfleet $(BENCH_ARGS)

# Each fault of issue 14 on a fresh site of separate processes (Redis with
# AOF, the server, two agents, 1000 factory devices), each with its audit
# table, then one JSON line; fails when a must-be-0 figure is not 0.
chaos:
	scripts/deps.sh chaos
	$(GO) run ./scripts/chaos --net $(CHAOS_NET) $(CHAOS_ARGS)

clean:
	rm -rf $(BIN) $(PEERS) $(DIST)
