# Benchmarks: `make bench` is the full run (under 10 minutes), `make bench-quick` about a minute.
.PHONY: bench bench-quick
bench:
	go run ./cmd/cdc-relay bench

bench-quick:
	go run ./cmd/cdc-relay bench --quick

# other targets below
.PHONY: test demo build
# The one test command (CI runs exactly this via .ci/run): gofmt, vet, every test including the
# fault-injection suite and the history checker (build tag "fault") and every fuzzer's seed
# corpus, the packages that run goroutines again under the race detector.
# The packages whose own goroutines race run only under -race; all others without it. The fault
# suite is listed first: it mostly waits on processes and the database, so it starts first
# and the other packages run beside it. `make fuzz` runs each fuzzer for a while.
RACE_PACKAGES = ./relay ./cdc ./internal/daemon ./internal/sender/... ./internal/receiver ./internal/status ./internal/credentials
OTHER_PACKAGES = ./tests/reliability $(shell go list ./... | grep -v -E '/cdc-relay/(relay|cdc|internal/daemon|internal/sender|internal/receiver|internal/status|internal/credentials|tests/reliability)(/|$$)')
test:
	@out=$$(gofmt -l $$(go list -f '{{.Dir}}' ./...)); if [ -n "$$out" ]; then echo "not gofmt-formatted (run gofmt -w on them):"; echo "$$out"; exit 1; fi
	go vet ./...
	go vet -tags fault ./tests/reliability/
	go test -race -timeout 20m $(RACE_PACKAGES)
	go test -tags fault -timeout 30m $(OTHER_PACKAGES)

.PHONY: fuzz
# Each fuzzer for FUZZTIME (default 30s); their seed corpora already run in make test.
FUZZTIME ?= 30s
fuzz:
	go test -run '^$$' -fuzz '^FuzzAppendEnvelope$$' -fuzztime $(FUZZTIME) ./mapping
	go test -run '^$$' -fuzz '^FuzzDecodeEnvelope$$' -fuzztime $(FUZZTIME) ./mapping
	go test -run '^$$' -fuzz '^FuzzCheckPayload$$' -fuzztime $(FUZZTIME) ./mapping
	go test -run '^$$' -fuzz '^FuzzCompact$$' -fuzztime $(FUZZTIME) ./mapping
	go test -run '^$$' -fuzz '^FuzzParseStore$$' -fuzztime $(FUZZTIME) ./internal/credentials
	go test -run '^$$' -fuzz '^FuzzCheckDelivery$$' -fuzztime $(FUZZTIME) ./relay

# The README's first command: throwaway PostgreSQL, reference receiver, CE activity, the relay.
demo:
	go run ./cmd/cdc-relay demo

build:
	go build -o cdc-relay ./cmd/cdc-relay

.PHONY: test-fault
# The fault-injection suite alone, verbose, with its summary table.
test-fault:
	go test -tags fault -timeout 30m -v ./tests/reliability/
