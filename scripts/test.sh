#!/usr/bin/env bash
# Runs the whole test suite: static checks, every unit test with the race
# detector, then the integration tests. Integration tests start their own
# MariaDB, Redis and Redis Cluster on free loopback ports and run the
# binlogsync and reconciler binaries as subprocesses; their test code is a
# harness (load generators, MySQL-vs-Redis comparisons over 200k-row tables),
# so they run without -race, which would only slow the comparisons down.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh kcat sysbench
echo "== go vet"
go vet ./...
echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt would change: $unformatted"; exit 1; fi
echo "== go test -race (unit tests)"
go test -race -count=1 -timeout 30m $(go list ./... | grep -v '/integration$') 2>&1 | tee /tmp/binlogsync-test.log
echo "== go test (integration)"
go test -count=1 -timeout 60m ./integration/ 2>&1 | tee -a /tmp/binlogsync-test.log
