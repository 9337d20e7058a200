#!/usr/bin/env bash
# Hand-in: run the test suite, then pack the code into code.zip and list what went in.
# Left out: data/, runs/, model/ (except their README.md), checkpoints and token arrays,
# virtual environments, caches, wandb/, .git, and any file in pics/ over 1 MB.
# Usage: ./make_submission.sh [--no-tests]   (--no-tests: re-pack only; hand in a tested tree)
set -euo pipefail
cd "$(dirname "$0")"

if [[ "${1:-}" != "--no-tests" ]]; then
    if ! uv run pytest; then
        echo "make_submission: tests failed; code.zip was not written" >&2
        exit 1
    fi
fi

uv run python - <<'PY'
import os
import zipfile
from pathlib import Path

SKIP_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", ".ruff_cache", "wandb", "checkpoints"}
OUTPUT_DIRS = {"data", "runs", "model"}  # only their README.md goes in
SKIP_SUFFIXES = {".pt", ".npy", ".bin", ".pyc", ".zip", ".tmp", ".part"}
MAX_PIC_BYTES = 1 << 20


def wanted(path: Path) -> bool:
    top = path.parts[0]
    if top in OUTPUT_DIRS:
        return path.name == "README.md" and len(path.parts) == 2
    if path.suffix in SKIP_SUFFIXES or path.name == ".DS_Store":
        return False
    return not (top == "pics" and path.stat().st_size > MAX_PIC_BYTES)


files = []
for root, dirs, names in os.walk("."):
    dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info"))
    files += [p for n in sorted(names) if wanted(p := Path(root, n).relative_to("."))]

tmp = Path("code.zip.tmp")
with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
    for p in files:
        z.write(p)
os.replace(tmp, "code.zip")
for p in files:
    print(f"{p.stat().st_size:>10,}  {p}")
print(f"code.zip: {len(files)} files, {sum(p.stat().st_size for p in files):,} bytes packed "
      f"into {Path('code.zip').stat().st_size:,}")
PY
