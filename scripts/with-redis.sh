#!/usr/bin/env bash
# Run a command beside a throwaway redis-server on a free loopback port.
# Reuses AUTODIDACT_TEST_REDIS_URL when it already answers; otherwise installs Debian's
# redis-server if missing, starts one, exports AUTODIDACT_TEST_REDIS_URL and stops it after.
set -euo pipefail

if [[ -n "${AUTODIDACT_TEST_REDIS_URL:-}" ]]; then
    exec "$@"
fi

if ! command -v redis-server >/dev/null 2>&1; then
    echo "with-redis: installing Debian's redis-server" >&2
    export DEBIAN_FRONTEND=noninteractive
    if [[ $(id -u) -eq 0 ]]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq >/dev/null
    $SUDO apt-get install -y -qq redis-server >/dev/null
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
dir=$(mktemp -d)
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
cleanup() {
    if [[ -f "$dir/redis.pid" ]]; then kill "$(cat "$dir/redis.pid")" 2>/dev/null || true; fi
    rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 50); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.1
done
export AUTODIDACT_TEST_REDIS_URL="redis://127.0.0.1:$port/0"
echo "with-redis: redis-server on $AUTODIDACT_TEST_REDIS_URL" >&2
"$@"
