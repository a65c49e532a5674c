#!/usr/bin/env bash
# Starts or stops moto's server, the local AWS emulator the AWS adapter
# tests run against. It listens on 127.0.0.1 only, on a free port written
# to .moto.port; the process id goes to .moto.pid.
#
#   scripts/moto.sh start   install moto into .venv if needed, start it, wait until it responds
#   scripts/moto.sh stop    stop the server this script started
set -euo pipefail
cd "$(dirname "$0")/.."

MOTO_VERSION="5.2.6"
VENV=.venv

start() {
    if [ ! -x "$VENV/bin/moto_server" ]; then
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
    fi
    if [ -f .moto.pid ] && kill -0 "$(cat .moto.pid)" 2>/dev/null; then
        echo "moto already running on port $(cat .moto.port) (pid $(cat .moto.pid))"
        return
    fi
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
    AWS_EC2_METADATA_DISABLED=true AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
        nohup "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" > .moto.log 2>&1 &
    echo $! > .moto.pid
    echo "$port" > .moto.port
    for _ in $(seq 1 100); do
        if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/', timeout=1)" 2>/dev/null; then
            echo "moto listening on 127.0.0.1:$port (pid $(cat .moto.pid))"
            return
        fi
        sleep 0.2
    done
    echo "moto did not start within 20 s; see .moto.log" >&2
    stop
    exit 1
}

stop() {
    if [ -f .moto.pid ]; then
        pid=$(cat .moto.pid)
        kill "$pid" 2>/dev/null || true
        # moto's server can take a few seconds to exit; make sure it does.
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
        rm -f .moto.pid .moto.port
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
