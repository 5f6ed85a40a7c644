#!/usr/bin/env bash
# Starts a NATS server with JetStream on 127.0.0.1:4222 if none answers
# there (the machine's own, or one in a scratch store for CI), and waits
# until it does. Prints nothing when one was already up.
set -euo pipefail
up() { (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; }
if up; then
    exit 0
fi
command -v nats-server >/dev/null || {
    echo "no NATS on 127.0.0.1:4222 and no nats-server to start (apt-get install nats-server)" >&2
    exit 1
}
echo "NATS is down; starting nats-server with JetStream" >&2
store=${NATS_STORE_DIR:-/tmp/orderflow-nats}
mkdir -p "$store"
nohup nats-server -a 127.0.0.1 -p 4222 -js -sd "$store" >"$store/nats.log" 2>&1 &
for _ in $(seq 1 50); do
    up && exit 0
    sleep 0.2
done
echo "NATS did not come up within 10 s; its log:" >&2
tail -20 "$store/nats.log" >&2
exit 1
