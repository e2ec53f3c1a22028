#!/usr/bin/env bash
# Runs the whole test suite: static checks, then every unit and integration
# test with the race detector. Integration tests start their own MariaDB,
# Redis and Redis Cluster on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh kcat sysbench
echo "== go vet"
go vet ./...
echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt would change: $unformatted"; exit 1; fi
echo "== go test -race"
go test -race -count=1 -timeout 75m ./... 2>&1 | tee /tmp/binlogsync-test.log
