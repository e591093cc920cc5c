#!/usr/bin/env bash
# Installs the peer agent frameworks of benches/loop_vs_peers.sh (smolagents and the OpenAI
# Agents SDK, pinned in requirements.txt) into a venv in reagent's cache. Prints the venv's
# python on stdout, progress on stderr. Does nothing once the venv matches requirements.txt.
#
#     benches/peers/setup.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${REAGENT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/reagent}"
venv="$cache/peer-bench-venv"
# A copy of the requirements it was built from marks a finished install (and a stale one).
if ! cmp -s "$here/requirements.txt" "$venv/installed-requirements.txt"; then
    echo "setup: installing smolagents and openai-agents into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
    cp "$here/requirements.txt" "$venv/installed-requirements.txt"
fi
echo "$venv/bin/python"
