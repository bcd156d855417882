"""meshwarp's mouth shapes and blinks, as MediaPipe sees them on the rendered frames."""
from __future__ import annotations

import numpy as np
import pytest

from runtime.engines.meshwarp import MeshWarpAnimator
from runtime.engines.meshwarp.animator import MAX_LIP_GAP, MAX_LIP_ROUND
from runtime.engines.meshwarp.motion_basis import BASES
from runtime.errors import NoFaceError
from runtime.media import landmarks as lm


@pytest.fixture(scope="module")
def animator(face_locator):
    return MeshWarpAnimator(face_locator)


@pytest.fixture(scope="module")
def prepared(animator, astronaut):
    return animator.prepare(astronaut)


def weights(prepared, lip_gap: float, **others: float) -> np.ndarray:
    values = np.zeros(len(BASES), np.float32)
    values[BASES.index("jaw")] = (lip_gap - prepared.source_lip_gap) / 1.12
    for name, value in others.items():
        values[BASES.index(name)] = value
    return values


def eye_opening(face: lm.FaceLandmarks) -> float:
    gaps = [np.linalg.norm(face.points[u] - face.points[l], axis=1).mean() for u, l in lm.EYELID_PAIRS]
    return float(np.mean(gaps)) / face.face_height


def mouth_width(face: lm.FaceLandmarks) -> float:
    left, right = lm.MOUTH_CORNERS
    return float(np.linalg.norm(face.points[left] - face.points[right])) / face.face_height


def test_mouth_opens_and_closes_as_asked(animator, prepared, face_locator):
    closed = face_locator.locate(animator.render(prepared, weights(prepared, 0.0)))
    half = face_locator.locate(animator.render(prepared, weights(prepared, MAX_LIP_GAP / 2)))
    wide = face_locator.locate(animator.render(prepared, weights(prepared, MAX_LIP_GAP)))
    assert closed.lip_gap() < half.lip_gap() < wide.lip_gap()
    assert closed.lip_gap() < 0.03
    assert wide.lip_gap() > 0.06


def test_rounded_mouth_is_narrower(animator, prepared, face_locator):
    plain = face_locator.locate(animator.render(prepared, weights(prepared, 0.04)))
    rounded = face_locator.locate(animator.render(prepared, weights(prepared, 0.04, lip_round=MAX_LIP_ROUND)))
    assert mouth_width(rounded) < 0.93 * mouth_width(plain)


def test_blink_closes_the_eyes(animator, prepared, face_locator):
    open_eyes = face_locator.locate(animator.render(prepared, weights(prepared, 0.0)))
    blinking = face_locator.locate(animator.render(prepared, weights(prepared, 0.0, blink=1.0)))
    assert eye_opening(blinking) < 0.5 * eye_opening(open_eyes)


def test_head_turns_while_the_background_stays(animator, prepared, face_locator, astronaut):
    turned = animator.render(prepared, weights(prepared, prepared.source_lip_gap, head_yaw=3.0))
    moved = face_locator.locate(turned).points[lm.NOSE_TIP] - face_locator.locate(astronaut).points[lm.NOSE_TIP]
    assert moved[0] > 1.0  # pixels, towards the viewer's right
    x0, y0, x1, y1 = prepared.roi
    outside = np.ones(astronaut.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert (turned[outside] == astronaut[outside]).all()


def test_frames_match_the_requested_count(animator, prepared):
    from runtime.media.audio import Speech
    from runtime.media.speech_motion import face_motion

    motion = face_motion(Speech(np.zeros(16000 * 2, np.float32), 16000), 30)
    frames = list(animator.frames(prepared, motion))
    assert len(frames) == 60 and frames[0].shape == (512, 512, 3)


def test_no_face_is_refused(animator):
    with pytest.raises(NoFaceError):
        animator.prepare(np.full((256, 256, 3), 127, np.uint8))
