#!/usr/bin/env bash
# HTTP load test: calls `echo` through POST /api/v1/plugins/echo/call/echo on 127.0.0.1
# with wrk (Debian package `wrk`), and prints requests/s and latency percentiles.
#
#   scripts/load.sh [DURATION_S] [CONNECTIONS] [THREADS]
#
# Builds the release host and plugins, starts a server on a free port in a temporary
# folder, runs one bounded wrk run against loopback only, and stops the server.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${1:-10}"
CONNS="${2:-32}"
THREADS="${3:-2}"
PORT="${XCORE_LOAD_PORT:-18089}"

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }

cargo build --release --workspace -q
work="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/plugins/echo"
# No rate limit, so the run measures the call path rather than 429s.
cat > "$work/plugins/echo/plugin.yaml" <<YAML
name: echo
version: 0.1.0
api_version: "^0.1"
entry_point: libecho.so
resources:
  rate_limit: { calls: 0, period_seconds: 1 }
YAML
cp target/release/libxcore_plugin_echo.so "$work/plugins/echo/libecho.so"
cat > "$work/xcore.yaml" <<YAML
server: { port: $PORT, admin_token: load-test }
logging: { level: warn, file: false }
# The copy of echo is unsigned: this throwaway server checks no signatures.
security: { require_signatures: none }
YAML
(cd "$work" && exec "$OLDPWD/target/release/xcore" serve --config xcore.yaml) &
pid=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
  sleep 0.1
done
cat > "$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"hello":"world"}'
wrk.headers["Content-Type"] = "application/json"
LUA
echo "wrk -t$THREADS -c$CONNS -d${DURATION}s --latency POST /api/v1/plugins/echo/call/echo ($(nproc) cores)"
wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency -s "$work/post.lua" \
  "http://127.0.0.1:$PORT/api/v1/plugins/echo/call/echo" | tee "$work/wrk.out"
echo
awk '/Requests\/sec/ {print "requests/s: " $2} / 50%/ {print "p50: " $2} / 99%/ {print "p99: " $2}' "$work/wrk.out"
