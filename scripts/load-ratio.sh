#!/usr/bin/env bash
# Ratio run: trusted and sandboxed echo against the same server's GET /health, wrk -t2 -c32 -d10s,
# interleaved twice; server CPU per request from /proc/<pid>/stat (utime + stime). Loopback only.
# The copies of echo are unsigned, so this test server runs with signatures off.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"; PORT="${XCORE_LOAD_PORT:-18091}"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
(cd "$ROOT" && cargo build --release -q -p xcore-host -p xcore-plugin-echo)
work=$(mktemp -d); mkdir -p "$work/plugins/echo"
cat > "$work/plugins/echo/plugin.yaml" <<YAML
name: echo
version: 0.1.0
api_version: "^0.1"
entry_point: libecho.so
resources:
  rate_limit: { calls: 0, period_seconds: 1 }
YAML
cp $ROOT/target/release/libxcore_plugin_echo.so "$work/plugins/echo/libecho.so"
mkdir -p "$work/plugins/echo_sbx"
sed -e 's/^name: echo/name: echo_sbx/' -e 's/^resources:/execution_mode: sandboxed\nresources:/' "$work/plugins/echo/plugin.yaml" > "$work/plugins/echo_sbx/plugin.yaml"
cp "$work/plugins/echo/libecho.so" "$work/plugins/echo_sbx/libecho.so"
cat > "$work/xcore.yaml" <<YAML
server: { port: $PORT, admin_token: load-test }
logging: { level: warn, file: false }
security: { require_signatures: none }
plugins: { watch: false }
YAML
cat > "$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"hello":"world"}'
wrk.headers["Content-Type"] = "application/json"
LUA
(cd "$work" && exec $ROOT/target/release/xcore serve --config xcore.yaml) > "$work/server.log" 2>&1 &
pid=$!
trap 'kill $pid; rm -rf $work' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.1; done
curl -sf -X POST -H 'content-type: application/json' -d '{"hello":"world"}' http://127.0.0.1:$PORT/api/v1/plugins/echo/call/echo; echo
tck=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' /proc/$pid/stat; }
run() { # name url [script]
  local c0 c1 out rps n
  c0=$(cpu)
  out=$(wrk -t2 -c32 -d10s --latency ${3:+-s $3} "$2")
  c1=$(cpu)
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  p50=$(echo "$out" | awk '/ 50%/ {print $2}')
  echo "$1 rps=$rps p50=$p50 requests=$n cpu_us_per_req=$(awk -v a="$c0" -v b="$c1" -v t="$tck" -v n="$n" 'BEGIN { printf "%.1f", (b - a) * 1e6 / t / n }') non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')"
}
curl -sf -X POST -H 'content-type: application/json' -d '{"hello":"world"}' http://127.0.0.1:$PORT/api/v1/plugins/echo_sbx/call/echo; echo
for rep in 1 2; do
  run health http://127.0.0.1:$PORT/health
  run echo http://127.0.0.1:$PORT/api/v1/plugins/echo/call/echo "$work/post.lua"
  run echo_sandboxed http://127.0.0.1:$PORT/api/v1/plugins/echo_sbx/call/echo "$work/post.lua"
done
