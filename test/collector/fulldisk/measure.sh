#!/usr/bin/env bash
# Measures the collector on a full data volume: started on it (CPU, log
# lines, probes, reads, the answer to a write), back to writing once space
# is freed, and filled while it runs.
#
# It needs a small, empty filesystem of its own at $FULLDISK, which it
# fills with a file; as root, for example:
#
#   mkdir -p /tmp/cxop-fulldisk && mount -t tmpfs -o size=300m tmpfs /tmp/cxop-fulldisk
#   make build && FULLDISK=/tmp/cxop-fulldisk test/collector/fulldisk/measure.sh bin/cxop
#
# CPU is in clock ticks of /proc/<pid>/stat (100 a core-second).
set -u
BIN=${1:?usage: measure.sh path/to/cxop}
D=${FULLDISK:?set FULLDISK to the mount point of a small, empty filesystem}
PORT=${PORT:-18080}
URL=http://127.0.0.1:$PORT
TOK=fulldisk-token-0123456789
WORK=$(mktemp -d)
trap 'rm -rf "$WORK" "$D"/data "$D"/filler' EXIT
cat >"$WORK/config.yaml" <<C
touchpoints:
  - name: chat
    waitThreshold: 2m
    tokenSHA256: ["$(printf %s $TOK | sha256sum | cut -d' ' -f1)"]
readTokenSHA256: ["$(printf %s $TOK | sha256sum | cut -d' ' -f1)"]
C
rm -rf "$D"/data "$D"/filler
start() {
	"$BIN" collector --listen 127.0.0.1:$PORT --data-dir "$D/data" --config "$WORK/config.yaml" --block-cache-size 8Mi >"$1" 2>&1 &
	PID=$!
	for _ in $(seq 100); do curl -fs $URL/healthz >/dev/null 2>&1 && break; sleep 0.1; done
}
cpu() { awk '{print $14+$15}' /proc/$PID/stat; }
post() { curl -s -o /dev/null -w '%{http_code}' -X POST $URL/v1/events -H "Authorization: Bearer $TOK" -d "$1"; }
batch() {
	local s="["
	for i in $(seq "$2"); do s+="{\"id\":\"$1-$i\",\"touchpoint\":\"chat\",\"customer\":\"c$i\",\"waitSeconds\":$((i % 300))},"; done
	echo "${s%,}]"
}
summary() { curl -s -H "Authorization: Bearer $TOK" "$URL/v1/summary?touchpoint=chat&window=1d" | grep -o '"interactions":[0-9]*'; }

start "$WORK/first.log"
for b in $(seq 20); do post "$(batch b$b 100)" >/dev/null; done
echo "stored: $(summary)"
kill -TERM $PID; wait $PID
dd if=/dev/zero of="$D/filler" bs=1M 2>/dev/null
echo "volume: $(df -B1 "$D" | tail -1)"

start "$WORK/full.log"
sleep 2
c0=$(cpu); l0=$(wc -l <"$WORK/full.log"); sleep 30; c1=$(cpu); l1=$(wc -l <"$WORK/full.log")
echo "started on the full volume: $((c1 - c0)) CPU ticks and $((l1 - l0)) log lines in 30s, $l1 log lines in all"
echo "healthz: $(curl -s -w ' %{http_code}' $URL/healthz | tr '\n' ' ')"
echo "readyz: $(curl -s -w ' %{http_code}' $URL/readyz | tr '\n' ' ')"
echo "summary: $(summary)"
echo "export: $(curl -s -H "Authorization: Bearer $TOK" "$URL/v1/export?touchpoint=chat" | wc -l) records"
echo "ingest: $(curl -s -D - -o /dev/null -X POST $URL/v1/events -H "Authorization: Bearer $TOK" -d "$(batch n 1)" | grep -i -e '^HTTP' -e retry-after | tr -d '\r' | tr '\n' ' ')"
curl -s $URL/metrics | grep -e '^cxop_collector_data_volume' -e '^cxop_collector_store_'

rm -f "$D/filler"
t0=$(date +%s)
for _ in $(seq 120); do [ "$(post "$(batch after 1)")" = 200 ] && break; sleep 1; done
echo "writing again $(($(date +%s) - t0))s after space was freed; readyz: $(curl -s $URL/readyz); $(summary)"

dd if=/dev/zero of="$D/filler" bs=1M 2>/dev/null
codes=""
for b in $(seq 40); do codes+="$(post "$(batch r$b 200)") "; done
echo "answers while the volume filled: $(echo $codes | tr ' ' '\n' | sort | uniq -c | tr '\n' ' ')"
c0=$(cpu); l0=$(wc -l <"$WORK/full.log"); sleep 20; c1=$(cpu); l1=$(wc -l <"$WORK/full.log")
echo "filled while running: $((c1 - c0)) CPU ticks and $((l1 - l0)) log lines in 20s"
echo "healthz: $(curl -s -w ' %{http_code}' $URL/healthz | tr '\n' ' ')"
echo "readyz: $(curl -s -w ' %{http_code}' $URL/readyz | tr '\n' ' ')"
kill -TERM $PID; wait $PID
# What the kubelet's restart finds: the volume is still full.
start "$WORK/restart.log"
sleep 1
echo "after the restart: readyz $(curl -s -w ' %{http_code}' $URL/readyz | tr '\n' ' '); $(summary)"
kill -TERM $PID; wait $PID
