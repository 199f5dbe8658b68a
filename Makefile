# cvlan build, test and lab entry points. Run `make help` for the list.
#
# `make test` and `make lab` set up what they need themselves (as root on Debian):
# scripts/deps.sh installs missing packages, scripts/pg.sh runs a throwaway PostgreSQL.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

GO        ?= go
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X github.com/cvlan/cvlan/internal/version.Version=$(VERSION)
# Benchmarks: BENCH selects (a -bench regexp), BENCHTIME sets each one's budget.
BENCH     ?= .
BENCHTIME ?= 1s
BENCHDIR  := bench

.PHONY: help build test test-kernel bench lab bpf proto lint clean deps

help:
	@echo "make build   static binaries for ./cmd/... into bin/"
	@echo "make test    install deps, start PostgreSQL, vet + gofmt + go test -race, check binaries"
	@echo "make test-kernel  the kernel matrix: datapath and e2e suites on Debian's kernel under qemu and on the host (docs/kernel-matrix.md)"
	@echo "make bench   benchmarks on SQLite and PostgreSQL; BENCH=regexp BENCHTIME=1x|2s; report in $(BENCHDIR)/report.txt"
	@echo "make lab     build, then run a live cvlan network in network namespaces (LAB_ONCE=1 exits after the report)"
	@echo "make bpf     regenerate eBPF objects (go generate in packages with bpf2go directives)"
	@echo "make proto   regenerate controlplane/controlpb from control.proto (protoc from apt, protoc-gen-go from go.mod)"
	@echo "make lint    gofmt, go vet, staticcheck"
	@echo "make clean   remove bin/ and benchmark reports"

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/ ./cmd/...

deps:
	scripts/deps.sh

test:
	scripts/deps.sh
	scripts/test.sh

# The kernel matrix (docs/kernel-matrix.md); it installs qemu and the listed kernels itself.
test-kernel:
	scripts/kernel-matrix.sh

# The PostgreSQL cluster lives in a temp dir; the trap stops it however the run ends.
bench: deps
	@mkdir -p $(BENCHDIR)
	@pgdir=$$(mktemp -d /tmp/cvlan-bench.XXXXXX); \
	trap 'scripts/pg.sh stop "$$pgdir" >/dev/null || true' EXIT INT TERM; \
	export CVLAN_TEST_POSTGRES_DSN=$$(scripts/pg.sh start "$$pgdir"); \
	echo "# cvlan $(VERSION) $$(date -u +%Y-%m-%dT%H:%M:%SZ) bench=$(BENCH) benchtime=$(BENCHTIME)" | tee $(BENCHDIR)/report.txt; \
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -benchtime=$(BENCHTIME) -timeout 15m ./... 2>&1 | tee -a $(BENCHDIR)/report.txt
	@echo "report: $(BENCHDIR)/report.txt"

lab: deps build
	scripts/lab.sh

# Only packages that carry a bpf2go directive are regenerated. The directives name the
# pinned compiler (clang-19, from scripts/deps.sh); BPF2GO_* from the environment is
# ignored so that every machine produces the same objects as the committed ones.
BPF_CLANG := clang-19
bpf:
	@command -v $(BPF_CLANG) >/dev/null || { echo "bpf: $(BPF_CLANG) not found; run make deps"; exit 1; }
	@unset BPF2GO_CC BPF2GO_STRIP BPF2GO_CFLAGS BPF2GO_MAKEBASE; \
	pkgs=$$( (grep -rl --include='*.go' -e '^//go:generate .*bpf2go' . || true) | xargs -r -n1 dirname | sort -u); \
	if [ -z "$$pkgs" ]; then echo "bpf: no bpf2go directives, nothing to regenerate"; exit 0; fi; \
	for d in $$pkgs; do echo "go generate -run bpf2go $$d"; $(GO) generate -run bpf2go "$$d"; done

# protoc comes from Debian (protobuf-compiler, installed by scripts/deps.sh); the Go
# plugin is the version go.mod pins in its tool block.
proto: deps
	$(GO) build -o bin/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
	cd controlplane/controlpb && $(GO) generate

lint:
	@out=$$(find . -name '*.go' -not -path './.git/*' -not -path '*/testdata/*' -not -path './bin/*' | xargs -r gofmt -l); \
	if [ -n "$$out" ]; then echo "gofmt: these files need formatting:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

clean:
	rm -rf bin/ $(BENCHDIR)/*.txt
