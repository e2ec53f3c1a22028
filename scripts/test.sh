#!/usr/bin/env bash
# Runs the whole test suite: static checks, then every unit and integration
# test with the race detector. Integration tests start their own MariaDB,
# Redis and Redis Cluster on free loopback ports and run the binlogsync and
# reconciler binaries as subprocesses. The unit tests go first so that a
# failure there shows up within minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh kcat sysbench
echo "== go vet"
go vet ./...
echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt would change: $unformatted"; exit 1; fi
echo "== go mod tidy"
go mod tidy -diff || { echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1; }
echo "== go test -race (unit tests)"
go test -race -count=1 -timeout 30m $(go list ./... | grep -v '/integration$') 2>&1 | tee /tmp/binlogsync-test.log
echo "== go test, without -race (tests of paths where a dependency races internally: files tagged !race)"
go test -count=1 -timeout 10m -run 'TestConsumerTopicRecreated' ./transport/kafka/ 2>&1 | tee -a /tmp/binlogsync-test.log
echo "== go test -race (integration)"
go test -race -count=1 -timeout 60m ./integration/ 2>&1 | tee -a /tmp/binlogsync-test.log
