#!/usr/bin/env bash
# Set up a virtualenv with msgbus and the bank example, then run the demo on memory://.
#   scripts/demo.sh                       100 accounts on the embedded memory broker
#   scripts/demo.sh --url amqp://... --accounts 500
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[bank]"
exec .venv/bin/msgbus-bank demo "$@"
