#!/usr/bin/env bash
# Installs the third-party clients the API tests drive `reagent serve` with, pinned: the official
# `openai` Python client (for the OpenAI-compatible facade), `schemathesis` (property tests
# from /openapi.json) and `standardwebhooks` (the reference verifier of webhook signatures). Into
# a venv in reagent's cache; prints the venv's python.
set -euo pipefail
cache="${REAGENT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/reagent}"
pins="openai==3.57.0 schemathesis==4.32.5 standardwebhooks==1.1.0"
venv="$cache/api-clients-venv"
stamp="$venv/.reagent-pins"
if [ "$(cat "$stamp" 2>/dev/null)" != "$pins" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    # shellcheck disable=SC2086 # the pins are separate words
    "$venv/bin/pip" install --quiet --disable-pip-version-check $pins >&2
    echo "$pins" >"$stamp"
fi
echo "$venv/bin/python"
