#!/bin/sh
# Entrypoint of the eip-al worker image: `eip-al ARGS...`. For `serve` it first checks
# that PREFECT_API_URL is set and waits (EIP_WAIT_FOR_API_S, default 120 s) until the
# Prefect server answers its health check, so the worker never races the server.
set -eu
if [ "${1:-}" = "serve" ]; then
  if [ -z "${PREFECT_API_URL:-}" ]; then
    echo "eip-al-entrypoint: PREFECT_API_URL is not set; point it at the Prefect server," \
         "e.g. http://prefect-server:4200/api" >&2
    exit 2
  fi
  python3 - <<'PY'
import os
import sys
import time
import urllib.error
import urllib.request

url = os.environ["PREFECT_API_URL"].rstrip("/") + "/health"
wait_s = float(os.environ.get("EIP_WAIT_FOR_API_S", "120"))
deadline = time.monotonic() + wait_s
while True:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            if resp.status == 200:
                break
            why = f"HTTP {resp.status}"
    except (OSError, urllib.error.URLError) as exc:
        why = str(exc)
    if time.monotonic() >= deadline:
        sys.exit(f"eip-al-entrypoint: Prefect API {url} not healthy after {wait_s:g} s: {why}")
    time.sleep(2)
PY
fi
exec eip-al "$@"
