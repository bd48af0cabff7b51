#!/bin/sh
# Start p5proxy from this checkout. The first run creates a virtual environment in .venv and
# installs the gateway into it (`pip install .`); later runs only start it. Variables from a
# .env file beside this script are exported first (see .env.example). Arguments go to
# `p5proxy serve`, e.g.
#   ./start.sh --config config/p5proxy.example.yaml --port 18185
# The gateway replaces this shell (exec): its PID is the script's; SIGTERM stops it gracefully.
set -eu
cd "$(dirname "$0")"

if [ ! -x .venv/bin/p5proxy ]; then
    echo "start.sh: first run: creating .venv and installing p5proxy" >&2
    python3 -m venv .venv
    .venv/bin/pip install --quiet .
fi

if [ -f .env ]; then
    set -a
    . ./.env
    set +a
fi

exec .venv/bin/p5proxy serve "$@"
