#!/bin/sh
# Runs the two-node example on this machine: a redis-server with the
# persistence the README recommends, and two Caddy nodes on the same
# Caddyfile, each with a Caddy storage of its own (as on two machines).
# Ctrl-C stops the three of them. Everything they keep is in
# examples/cluster/data; delete it to start afresh.
#
# Needs redis-server (apt-get install redis-server) and the binary of
# `make build` (bin/caddy), which this builds when it is missing.
# CADDY=/path/to/caddy and REDIS_PORT (default 6380) override.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
caddy=${CADDY:-$root/bin/caddy}
data=$here/data
REDIS_PORT=${REDIS_PORT:-6380}

if [ ! -x "$caddy" ]; then
	echo "building $caddy"
	(cd "$root" && go build -o "$caddy" ./cmd/caddy)
fi
command -v redis-server >/dev/null || { echo "run.sh: redis-server not found (apt-get install redis-server)" >&2; exit 1; }

pids=
stop() {
	trap - INT TERM EXIT
	for pid in $pids; do
		kill "$pid" 2>/dev/null || true
	done
	wait
	echo "stopped"
}
trap stop INT TERM EXIT

mkdir -p "$data/redis" "$data/node1" "$data/node2"
# appendonly + everysec: a restart of Redis keeps everything but at most
# the last second of writes. noeviction: Redis refuses writes when full
# rather than dropping refresh tokens and revocations.
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$data/redis" \
	--appendonly yes --appendfsync everysec --save "" \
	--maxmemory-policy noeviction --logfile "$data/redis/redis.log" &
pids="$pids $!"

export REDIS_ADDRESS=127.0.0.1:$REDIS_PORT
export DEMO_APP_SECRET=${DEMO_APP_SECRET:-demo-app-secret}
for n in 1 2; do
	AUTHGATE_NODE=$n AUTHGATE_ADMIN=localhost:210$n \
		AUTHGATE_PROVIDER_PORT=900$n AUTHGATE_APP_PORT=800$n \
		XDG_DATA_HOME=$data/node$n XDG_CONFIG_HOME=$data/node$n \
		"$caddy" run --config "$here/Caddyfile" --adapter caddyfile \
		>"$data/node$n/caddy.log" 2>&1 &
	pids="$pids $!"
done

cat <<MSG
redis-server  127.0.0.1:$REDIS_PORT   (data and log in $data/redis)
node 1        provider http://localhost:9001 (the issuer)   app http://localhost:8001
node 2        provider http://localhost:9002                app http://localhost:8002
logs          $data/node1/caddy.log, $data/node2/caddy.log

Sign in at http://localhost:8001 as alice, password Abcd@1234, then open
http://localhost:8002: node 2 accepts node 1's session. Ctrl-C stops all.
MSG
wait
