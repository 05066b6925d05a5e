#!/usr/bin/env bash
# Load check of `inkgrad serve` on loopback only, bounded in count and time: 4 clients x 20
# requests (every fourth a stream the client drops after 0.5 s) against a server with one
# generation at a time and a queue of 2. Every answer must be 200 or 503, the server's memory
# must stay bounded, it must still answer afterwards and stop cleanly on SIGTERM.
# Usage: scripts/load_check.sh [build-dir]   (default: build; needs inkgrad and make_tiny_checkpoint)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"
INKGRAD="$BUILD/apps/inkgrad"
MAKER="$BUILD/tests/make_tiny_checkpoint"
CLIENTS=4
REQUESTS=20
MAX_RSS_GROWTH_MB=300

work="$(mktemp -d)"
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$MAKER" "$work/tiny.safetensors"
"$INKGRAD" serve --checkpoint "$work/tiny.safetensors" --host 127.0.0.1 --port 0 --threads 1 \
  --queue 2 >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
url=""
for _ in $(seq 100); do
  url="$(grep -o 'http://127.0.0.1:[0-9]*/' "$work/server.out" || true)"
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { echo "load_check: the server printed no address"; cat "$work/server.err"; exit 1; }

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$server_pid/status"; }
curl -s -o /dev/null --max-time 30 "${url}api/info"
start_rss=$(rss_kb)
(while kill -0 "$server_pid" 2>/dev/null; do rss_kb >>"$work/rss"; sleep 0.2; done) &
sampler_pid=$!

client() {  # id
  for i in $(seq "$REQUESTS"); do
    local seed=$(( $1 * 1000 + i ))
    if (( i % 4 == 0 )); then
      # A stream the client leaves after 0.5 s: the server must stop that generation.
      code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 0.5 -X POST \
        -d "{\"prompt\":\"circle\",\"steps\":100,\"count\":8,\"seed\":$seed}" \
        "${url}api/generate/stream" || true)
      echo "stream $code"
    else
      code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 60 -X POST \
        -d "{\"prompt\":\"cross\",\"steps\":10,\"count\":2,\"seed\":$seed}" "${url}api/generate")
      echo "plain $code"
    fi
  done
}

started=$SECONDS
client_pids=()
for c in $(seq "$CLIENTS"); do
  client "$c" >"$work/client$c" &
  client_pids+=($!)
done
for pid in "${client_pids[@]}"; do wait "$pid" || true; done
elapsed=$((SECONDS - started))

cat "$work"/client* >"$work/all"
total=$(wc -l <"$work/all")
ok=$(grep -c ' 200$' "$work/all" || true)
busy=$(grep -c ' 503$' "$work/all" || true)
streams=$(grep -c '^stream' "$work/all" || true)
bad=$(grep -vE ' (200|503)$' "$work/all" || true)

info=$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 "${url}api/info")
after=$(curl -s -o /dev/null -w '%{http_code}' --max-time 60 -X POST \
  -d '{"prompt":"circle","steps":5,"count":1,"seed":1}' "${url}api/generate")
end_rss=$(rss_kb)
peak_rss=$(sort -n "$work/rss" | tail -1)
kill -TERM "$server_pid"
wait "$server_pid" && stop_code=0 || stop_code=$?
server_pid=""
wait "$sampler_pid" 2>/dev/null || true

echo "load_check: $total requests from $CLIENTS clients in ${elapsed}s: $ok answered 200, $busy answered 503 (busy), $streams of them streams dropped by the client"
echo "load_check: RSS start $((start_rss / 1024)) MB, peak $((peak_rss / 1024)) MB, end $((end_rss / 1024)) MB"
echo "load_check: afterwards /api/info $info, a generation $after; SIGTERM exit code $stop_code"
status=0
[ "$total" -eq $((CLIENTS * REQUESTS)) ] || { echo "load_check: FAIL: $total answers, expected $((CLIENTS * REQUESTS))"; status=1; }
[ -z "$bad" ] || { echo "load_check: FAIL: answers other than 200/503:"; echo "$bad" | sort | uniq -c; status=1; }
[ "$info" = 200 ] && [ "$after" = 200 ] || { echo "load_check: FAIL: the server does not answer afterwards"; status=1; }
(( (peak_rss - start_rss) / 1024 <= MAX_RSS_GROWTH_MB )) ||
  { echo "load_check: FAIL: RSS grew by more than $MAX_RSS_GROWTH_MB MB"; status=1; }
[ "$stop_code" = 0 ] || { echo "load_check: FAIL: the server did not stop cleanly"; status=1; }
grep -q stopped "$work/server.out" || { echo "load_check: FAIL: no 'stopped' line"; status=1; }
[ "$status" = 0 ] && echo "load_check: passed"
exit "$status"
