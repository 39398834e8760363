# Benchmarks: `make bench` is the full run (under 10 minutes), `make bench-quick` about a minute.
.PHONY: bench bench-quick
bench:
	go run ./cmd/cdc-relay bench

bench-quick:
	go run ./cmd/cdc-relay bench --quick

# other targets below
.PHONY: test demo build
# The one test command (CI runs exactly this via .ci/run): vet, every test including the
# fault-injection suite and the history checker (build tag "fault"), the packages that run
# goroutines again under the race detector, then each fuzzer briefly.
# The packages whose own goroutines race run only under -race; all others without it.
# Two groups run side by side (make -j2): the fault suite mostly waits on processes and the
# database (about a fifth of the two cores), so the race-detector packages and the fuzzers run
# beside it; the fault suite is listed first so it starts first. Each group's output is printed
# whole when it ends.
RACE_PACKAGES = ./relay ./cdc ./internal/daemon ./internal/sender/... ./internal/receiver ./internal/status ./internal/credentials
OTHER_PACKAGES = ./tests/reliability $(shell go list ./... | grep -v -E '/cdc-relay/(relay|cdc|internal/daemon|internal/sender|internal/receiver|internal/status|internal/credentials|tests/reliability)(/|$$)')
test:
	go vet ./...
	go vet -tags fault ./tests/reliability/
	$(MAKE) -j2 --output-sync=target test-other test-race-fuzz

.PHONY: test-other test-race-fuzz
test-other:
	go test -tags fault -timeout 30m $(OTHER_PACKAGES)

test-race-fuzz:
	go test -race -timeout 20m $(RACE_PACKAGES)
	go test -run '^$$' -fuzz '^FuzzAppendEnvelope$$' -fuzztime 5s ./mapping
	go test -run '^$$' -fuzz '^FuzzDecodeEnvelope$$' -fuzztime 5s ./mapping
	go test -run '^$$' -fuzz '^FuzzCheckPayload$$' -fuzztime 5s ./mapping
	go test -run '^$$' -fuzz '^FuzzParseStore$$' -fuzztime 5s ./internal/credentials
	go test -run '^$$' -fuzz '^FuzzCheckDelivery$$' -fuzztime 5s ./relay

# The README's first command: throwaway PostgreSQL, reference receiver, CE activity, the relay.
demo:
	go run ./cmd/cdc-relay demo

build:
	go build -o cdc-relay ./cmd/cdc-relay

.PHONY: test-fault
# The fault-injection suite alone, verbose, with its summary table.
test-fault:
	go test -tags fault -timeout 30m -v ./tests/reliability/
