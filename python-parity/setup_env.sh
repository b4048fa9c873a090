#!/usr/bin/env bash
# Creates, once per machine, the Python virtual environment the parity harness runs in, and prints
# its python's path as the last line of stdout (everything else goes to stderr).
#
#   PY=$(python-parity/setup_env.sh | tail -n1)
#
# The environment lives outside the repository, in
#   ${PEFT4J_CACHE:-$HOME/.cache/peft4j}/pyenv-<first 12 hex of sha256(requirements.txt)>
# so an edit of requirements.txt gets a fresh one. A marker file is written only after pip finished,
# so an interrupted install is redone from scratch on the next call. Concurrent calls are serialised
# with flock. Interpreter: $PEFT4J_PYTHON, default python3.11.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
req="$here/requirements.txt"
[[ -f "$req" ]] || { echo "setup_env.sh: $req not found" >&2; exit 1; }

cache="${PEFT4J_CACHE:-$HOME/.cache/peft4j}"
hash="$(sha256sum "$req" | cut -c1-12)"
venv="$cache/pyenv-$hash"
marker="$venv/.peft4j-complete"
py="$venv/bin/python"

ready() { [[ -f "$marker" && -x "$py" ]] && "$py" -c 'import sys' 2>/dev/null; }

if ready; then
  echo "$py"
  exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/pyenv-$hash.lock"
if command -v flock >/dev/null 2>&1 && ! flock -n 9; then
  echo "setup_env.sh: another process is setting up $venv; waiting for it" >&2
  flock 9
fi

# Another process may have finished the install while we waited for the lock.
if ready; then
  echo "$py"
  exit 0
fi

base_python="${PEFT4J_PYTHON:-python3.11}"
command -v "$base_python" >/dev/null 2>&1 || { echo "setup_env.sh: $base_python not found (set PEFT4J_PYTHON)" >&2; exit 1; }

echo "setup_env.sh: creating $venv (torch from PyPI is large; this takes minutes)" >&2
start=$SECONDS
rm -rf "$venv"
"$base_python" -m venv "$venv" >&2
"$py" -m pip install --disable-pip-version-check -q -r "$req" >&2
cp "$req" "$venv/requirements.txt"
"$py" -c 'import torch, transformers, peft, safetensors; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__, "safetensors", safetensors.__version__)' >&2
date -u +%Y-%m-%dT%H:%M:%SZ > "$marker"
echo "setup_env.sh: ready in $((SECONDS - start)) s" >&2
echo "$py"
