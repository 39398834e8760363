# Benchmarks: `make bench` is the full run (under 10 minutes), `make bench-quick` about a minute.
.PHONY: bench bench-quick
bench:
	go run ./cmd/cdc-relay bench

bench-quick:
	go run ./cmd/cdc-relay bench --quick

# other targets below
