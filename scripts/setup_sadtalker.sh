#!/usr/bin/env bash
# Download the official SadTalker checkpoints (v0.0.2-rc, Apache-2.0) from the Hugging Face repo
# vinthony/SadTalker-V002rc into $MODELS_DIR/sadtalker/, in upstream's file layout:
#   SadTalker_V0.0.2_256.safetensors, SadTalker_V0.0.2_512.safetensors,
#   mapping_00109-model.pth.tar, mapping_00229-model.pth.tar
# Downloads resume where an interrupted one stopped; files already present with the hub's size
# are skipped; every file's size is checked against the hub's. Needs python3 with huggingface_hub.
#   MODELS_DIR=/data/weights ./scripts/setup_sadtalker.sh
#   SADTALKER_SIZES=256 ./scripts/setup_sadtalker.sh      # skip the 512 model (725 MB less)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODELS_DIR="${MODELS_DIR:-$REPO_ROOT/runtime/pretrained_weights}"
SADTALKER_SIZES="${SADTALKER_SIZES:-256 512}"
PYTHON="${PYTHON:-python3}"
export MODELS_DIR SADTALKER_SIZES

"$PYTHON" - <<'PY'
import os
import sys
from pathlib import Path

try:
    from huggingface_hub import HfApi, hf_hub_download
except ImportError:
    sys.exit("huggingface_hub is missing: pip install huggingface_hub (or the 'engines' extra)")

REPO = "vinthony/SadTalker-V002rc"
sizes = os.environ["SADTALKER_SIZES"].split()
if not sizes or any(size not in ("256", "512") for size in sizes):
    sys.exit(f"SADTALKER_SIZES must list 256 and/or 512, got {os.environ['SADTALKER_SIZES']!r}")
FILES = [f"SadTalker_V0.0.2_{size}.safetensors" for size in sizes] + [
    "mapping_00109-model.pth.tar",  # paste-back ("full") mapping net: the one the service uses
    "mapping_00229-model.pth.tar",  # crop-only mapping net
]
target_dir = Path(os.environ["MODELS_DIR"]) / "sadtalker"
target_dir.mkdir(parents=True, exist_ok=True)
expected = {info.path: info.size for info in HfApi().get_paths_info(REPO, FILES)}
missing_on_hub = sorted(set(FILES) - set(expected))
if missing_on_hub:
    sys.exit(f"{REPO} no longer has {missing_on_hub}")

for name in FILES:
    target = target_dir / name
    if target.is_file() and target.stat().st_size == expected[name]:
        print(f"present  {target}")
        continue
    print(f"download {name} ({expected[name] / 1e6:.1f} MB)")
    # Shows a progress bar; an interrupted download resumes from its .incomplete file.
    hf_hub_download(REPO, name, local_dir=target_dir)
    size = target.stat().st_size
    if size != expected[name]:
        sys.exit(f"{target} has {size} bytes, the hub says {expected[name]}: delete it and run again")
print(f"SadTalker checkpoints ready in {target_dir}")
PY
