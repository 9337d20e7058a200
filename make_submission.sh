#!/usr/bin/env bash
# Hand-in: run the test suite, then pack the tracked files (what `git ls-files` lists, so no
# local data, runs, checkpoints or stray files) into code.zip and list what went in.
# Usage: ./make_submission.sh [--no-tests]   (--no-tests: re-pack only; hand in a tested tree)
set -euo pipefail
cd "$(dirname "$0")"

if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    echo "make_submission: not a git checkout; the hand-in packs the files git tracks" >&2
    exit 1
fi
if [[ "${1:-}" != "--no-tests" ]]; then
    if ! uv run pytest; then
        echo "make_submission: tests failed; code.zip was not written" >&2
        exit 1
    fi
fi

uv run python - <<'PY'
import os
import subprocess
import zipfile
from pathlib import Path

listed = subprocess.run(["git", "ls-files", "-z"], capture_output=True, check=True).stdout
files = [Path(p) for p in listed.decode().split("\0") if p and os.path.isfile(p)]
with zipfile.ZipFile("code.zip.tmp", "w", zipfile.ZIP_DEFLATED) as z:
    for p in files:
        z.write(p)
os.replace("code.zip.tmp", "code.zip")
for p in files:
    print(f"{p.stat().st_size:>10,}  {p}")
size = sum(p.stat().st_size for p in files)
print(f"code.zip: {len(files)} tracked files, {size:,} bytes, {os.path.getsize('code.zip'):,} packed")
PY
