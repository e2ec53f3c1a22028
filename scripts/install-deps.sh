#!/usr/bin/env bash
# Installs the servers and tools the tests and the demo use, from Debian's
# packages, when they are missing. Needs root (or sudo) and apt.
set -euo pipefail
need=()
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
for tool in "$@"; do
  case "$tool" in
    kcat) command -v kcat >/dev/null 2>&1 || need+=(kcat) ;;
    sysbench) command -v sysbench >/dev/null 2>&1 || need+=(sysbench) ;;
    percona-toolkit) command -v pt-table-checksum >/dev/null 2>&1 || need+=(percona-toolkit) ;;
  esac
done
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# The packages' service scripts must not start system-wide servers; the tests start their own.
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
