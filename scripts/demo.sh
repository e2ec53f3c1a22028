#!/usr/bin/env bash
# The main job on one machine: MariaDB -> binlogsync -> Redis.
#
# Uses MariaDB/MySQL and Redis already listening on 127.0.0.1:${MYSQL_PORT:-3306}
# and 127.0.0.1:${REDIS_PORT:-6379} (MySQL credentials for an admin user from
# DEMO_MYSQL_ADMIN / DEMO_MYSQL_ADMIN_PASSWORD, default root with no password);
# otherwise installs them with apt when missing and starts throwaway servers in
# a temporary directory. Then it loads a sample schema, runs binlogsync with
# config.example.yaml, writes rows and shows them arriving in Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
MYSQL_PORT=${MYSQL_PORT:-3306}
REDIS_PORT=${REDIS_PORT:-6379}
ADMIN=${DEMO_MYSQL_ADMIN:-root}
ADMIN_PW=${DEMO_MYSQL_ADMIN_PASSWORD:-}
work=$(mktemp -d /tmp/binlogsync-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

listening() { (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; }
scripts/install-deps.sh

if listening "$MYSQL_PORT"; then
  echo "== using the MySQL/MariaDB already listening on 127.0.0.1:$MYSQL_PORT"
else
  echo "== starting a throwaway MariaDB on 127.0.0.1:$MYSQL_PORT"
  mariadb-install-db --no-defaults --datadir="$work/data" --user="$(id -un)" \
    --auth-root-authentication-method=normal --skip-test-db >/dev/null
  mariadbd --no-defaults --datadir="$work/data" --socket="$work/mysqld.sock" --port="$MYSQL_PORT" \
    --bind-address=127.0.0.1 --user="$(id -un)" --server-id=1 --log-bin="$work/data/mariadb-bin" \
    --binlog-format=ROW --binlog-row-image=FULL --binlog-row-metadata=FULL \
    --log-error="$work/mysqld.err" &
  pids+=($!)
  for _ in $(seq 100); do listening "$MYSQL_PORT" && break; sleep 0.2; done
fi
if listening "$REDIS_PORT"; then
  echo "== using the Redis already listening on 127.0.0.1:$REDIS_PORT"
else
  echo "== starting a throwaway Redis on 127.0.0.1:$REDIS_PORT"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null &
  pids+=($!)
  for _ in $(seq 50); do listening "$REDIS_PORT" && break; sleep 0.1; done
fi

sql() { mariadb -h127.0.0.1 -P"$MYSQL_PORT" -u"$ADMIN" ${ADMIN_PW:+-p"$ADMIN_PW"} "$@"; }
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }

echo "== creating the least-privilege user binlogsync and a sample schema"
sql <<'SQL'
CREATE USER IF NOT EXISTS 'binlogsync'@'%' IDENTIFIED BY 'binlogsync-demo';
GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'binlogsync'@'%';
CREATE DATABASE IF NOT EXISTS shop;
DROP TABLE IF EXISTS shop.users;
CREATE TABLE shop.users (
  id INT PRIMARY KEY, name VARCHAR(50), email VARCHAR(100),
  balance DECIMAL(10,2), created_at DATETIME(3), note TEXT NULL
);
SQL

echo "== building and starting binlogsync (config.example.yaml)"
go build -o "$work/binlogsync" ./cmd/binlogsync
export BINLOGSYNC_MYSQL_ADDR=127.0.0.1:$MYSQL_PORT BINLOGSYNC_MYSQL_PASSWORD=binlogsync-demo
export BINLOGSYNC_REDIS_ADDR=127.0.0.1:$REDIS_PORT BINLOGSYNC_CHECKPOINT_PATH=$work/checkpoint
export BINLOGSYNC_TABLES_INCLUDE=shop.* BINLOGSYNC_LOG_FORMAT=text BINLOGSYNC_HTTP_ADDR=127.0.0.1:0
"$work/binlogsync" --config config.example.yaml 2>"$work/binlogsync.log" &
bls=$!
pids+=($bls)
for _ in $(seq 100); do grep -q '"streaming"\|msg=streaming' "$work/binlogsync.log" && break; sleep 0.1; done
grep -q 'streaming' "$work/binlogsync.log" || { cat "$work/binlogsync.log"; exit 1; }

echo "== writing rows in MariaDB"
sql shop <<'SQL'
INSERT INTO users VALUES (1,'Ada','ada@example.com',12.50,'2024-01-02 03:04:05.678',NULL),
                         (2,'Grace','grace@example.com',0.00,NOW(3),'hello'),
                         (3,'Linus','linus@example.com',99.99,NOW(3),'bye');
BEGIN; UPDATE users SET balance = balance + 1, note = 'updated' WHERE id = 1; DELETE FROM users WHERE id = 3; COMMIT;
UPDATE users SET id = 20 WHERE id = 2;
SQL
sleep 1
echo "== Redis now holds:"
for k in $(rcli --scan --pattern 'shop:users:*' | sort); do
  echo "-- $k"; rcli HGETALL "$k" | paste - -
done
echo "== metrics (excerpt)"
addr=$(sed -n 's/.*msg="http listening".* addr=\([^ ]*\).*/\1/p' "$work/binlogsync.log" | head -1)
if [ -n "$addr" ] && command -v curl >/dev/null; then
  curl -fsS "http://$addr/metrics" | grep -E '^binlogsync_(rows_applied_total|replication_lag_seconds|checkpoint_)' | head -8 || true
else
  echo "(metrics on http://$addr/metrics)"
fi
echo "== stopping binlogsync (SIGTERM: finishes the batch in flight and stores the checkpoint)"
kill -TERM "$bls"; wait "$bls" || true
tail -n 2 "$work/binlogsync.log"
echo "checkpoint: $(cat "$work/checkpoint")"
