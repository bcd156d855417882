#!/usr/bin/env python3
"""Render meshwarp's key poses as PNG stills to look at: closed, half-open, wide-open and rounded
mouths, a blink and a head turn, each full-size plus one strip of face close-ups.

    .venv/bin/python scripts/meshwarp_stills.py out/stills [--image portrait.png]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from runtime.config import Settings  # noqa: E402
from runtime.engines.meshwarp import MeshWarpAnimator  # noqa: E402
from runtime.engines.meshwarp.animator import MAX_LIP_GAP, MAX_LIP_ROUND  # noqa: E402
from runtime.engines.meshwarp.motion_basis import BASES  # noqa: E402
from runtime.media.landmarks import FaceLocator  # noqa: E402
from runtime.media.portrait import load_portrait_file  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--image", type=Path, default=Settings().default_avatar)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    portrait = load_portrait_file(args.image)
    animator = MeshWarpAnimator(FaceLocator())
    prepared = animator.prepare(portrait)

    def pose(lip_gap: float, **others: float) -> np.ndarray:
        weights = np.zeros(len(BASES), np.float32)
        weights[BASES.index("jaw")] = animator.jaw_weight(prepared, lip_gap)
        for name, value in others.items():
            weights[BASES.index(name)] = value
        return weights

    poses = {
        "closed": pose(0.0),
        "half_open": pose(MAX_LIP_GAP / 2),
        "wide_open": pose(MAX_LIP_GAP),
        "rounded": pose(0.5 * MAX_LIP_GAP, lip_round=MAX_LIP_ROUND),
        "blink": pose(0.0, blink=1.0),
        "head_turn": pose(MAX_LIP_GAP / 2, head_yaw=3.0, head_pitch=2.0, head_roll=2.0),
    }
    x0, y0, x1, y1 = prepared.roi
    close_ups = []
    for name, weights in poses.items():
        frame = animator.render(prepared, weights)
        Image.fromarray(frame).save(args.out / f"{name}.png")
        close_ups.append(np.asarray(Image.fromarray(frame[y0:y1, x0:x1]).resize((320, 320), Image.LANCZOS)))
    Image.fromarray(np.concatenate(close_ups, axis=1)).save(args.out / "strip.png")
    print(f"wrote {len(poses)} stills and strip.png to {args.out}")


if __name__ == "__main__":
    main()
