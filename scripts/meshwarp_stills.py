#!/usr/bin/env python3
"""Render meshwarp's key poses as PNG stills to look at: rest, closed, open, wide-open and rounded
mouths, a blink and a head turn, each full-size plus one strip of face close-ups per portrait.

By default for the bundled portrait (a smile with visible teeth) and the variants the tests make
from it: with glasses, and with the mouth open at rest. --image renders one portrait of your own.

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


def render_poses(animator: MeshWarpAnimator, portrait: np.ndarray, out: Path) -> Path:
    """Each pose full-size as out/<pose>.png, and out/strip.png of face close-ups; returns the strip."""
    out.mkdir(parents=True, exist_ok=True)
    prepared = animator.prepare(portrait)

    def pose(lip_gap: float, **others: float) -> np.ndarray:
        weights = np.zeros(len(BASES), np.float32)
        weights[BASES.index("jaw")] = animator.jaw_weight(prepared, lip_gap)
        for name, value in others.items():
            weights[BASES.index(name)] = value
        return weights

    speech_range = max(MAX_LIP_GAP, prepared.rest_lip_gap + 0.5 * MAX_LIP_GAP)  # as coefficients() opens it
    poses = {
        "rest": pose(prepared.rest_lip_gap),
        "closed": pose(0.0),
        "open": pose(0.5 * speech_range),
        "wide_open": pose(speech_range),
        "rounded": pose(0.5 * speech_range, lip_round=MAX_LIP_ROUND),
        "blink": pose(prepared.rest_lip_gap, blink=1.0),
        "head_turn": pose(0.5 * speech_range, head_yaw=3.0, head_pitch=2.0, head_roll=2.0),
    }
    x0, y0 = prepared.roi[:2]
    (left, top), (right, bottom) = prepared.face.points.min(axis=0), prepared.face.points.max(axis=0)
    face_box = (int(left) + x0, int(top) + y0, int(right) + x0, int(bottom) + y0)
    close_ups = [np.asarray(Image.fromarray(prepared.image).crop(face_box).resize((320, 320), Image.LANCZOS))]
    for name, weights in poses.items():
        frame = animator.render(prepared, weights)
        Image.fromarray(frame).save(out / f"{name}.png")
        close_ups.append(np.asarray(Image.fromarray(frame).crop(face_box).resize((320, 320), Image.LANCZOS)))
    strip = out / "strip.png"
    Image.fromarray(np.concatenate(close_ups, axis=1)).save(strip)
    print(f"{out}: portrait, then {', '.join(poses)} (rest lip gap {prepared.rest_lip_gap:.3f}, "
          f"jaw open {prepared.mouth.jaw_open}, glasses {prepared.glasses})")
    return strip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--image", type=Path, help="one portrait of your own instead of the bundled one and its variants")
    args = parser.parse_args()

    locator = FaceLocator()
    animator = MeshWarpAnimator(locator)
    if args.image:
        render_poses(animator, load_portrait_file(args.image), args.out)
        return
    from testkit.portraits import open_mouth, with_glasses  # the variants the tests use

    smile = load_portrait_file(Settings().default_avatar)
    render_poses(animator, smile, args.out / "toothy_smile")
    render_poses(animator, with_glasses(smile, locator.locate(smile)), args.out / "glasses")
    render_poses(animator, open_mouth(smile, animator), args.out / "open_mouth")


if __name__ == "__main__":
    main()
