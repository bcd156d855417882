#!/usr/bin/env python3
"""Download files of a Hugging Face repo into a folder, keeping their paths: files already present
with the hub's size are skipped, interrupted downloads resume, every size is checked against the
hub's. Used by scripts/setup_*.sh.

    python3 scripts/hf_fetch.py REPO TARGET_DIR FILE [FILE ...]
"""
from __future__ import annotations

import sys
from pathlib import Path


def fetch(repo: str, target_dir: Path, files: list[str]) -> None:
    try:
        from huggingface_hub import HfApi, hf_hub_download
    except ImportError:
        sys.exit("huggingface_hub is missing: pip install huggingface_hub (or the 'engines' extra)")
    target_dir.mkdir(parents=True, exist_ok=True)
    expected = {info.path: info.size for info in HfApi().get_paths_info(repo, files)}
    missing_on_hub = sorted(set(files) - set(expected))
    if missing_on_hub:
        sys.exit(f"{repo} no longer has {missing_on_hub}")
    for name in files:
        target = target_dir / name
        if target.is_file() and target.stat().st_size == expected[name]:
            print(f"present  {target}")
            continue
        print(f"download {name} ({expected[name] / 1e6:.1f} MB)")
        # Shows a progress bar; an interrupted download resumes from its .incomplete file.
        hf_hub_download(repo, name, local_dir=target_dir)
        size = target.stat().st_size
        if size != expected[name]:
            sys.exit(f"{target} has {size} bytes, the hub says {expected[name]}: delete it and run again")


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    fetch(sys.argv[1], Path(sys.argv[2]), sys.argv[3:])
