"""meshwarp: the embedded default backend. CPU only; its models ship in the mediapipe wheel."""
from __future__ import annotations

from typing import Iterator

import numpy as np

from ..engines.meshwarp import MeshWarpAnimator, PreparedPortrait
from ..media.audio import Speech
from ..errors import UserInputError
from ..media.landmarks import FaceLocator, FaceSelector
from ..media.speech_motion import face_motion
from .base import AnimationOptions, AvatarBackend, PortraitCache


class MeshWarpBackend(AvatarBackend):
    name = "meshwarp"
    display_name = "MeshWarp"

    def __init__(self, animator: MeshWarpAnimator):
        self.animator = animator
        self._portraits: PortraitCache[PreparedPortrait] = PortraitCache()

    @classmethod
    def load(cls, settings, device) -> "MeshWarpBackend":
        # Faces down to smallest_face_side are found; those under min_face_side are enlarged to it.
        locator = FaceLocator(min_face_side=settings.smallest_face_side)
        return cls(MeshWarpAnimator(locator, workable_face_side=settings.min_face_side, max_output_side=settings.max_output_side))

    def prepare(self, portrait: np.ndarray, face: FaceSelector = FaceSelector()) -> PreparedPortrait:
        return self._portraits.get_or_compute(
            portrait, lambda image: self.animator.prepare(image, face), key_suffix=repr(face)
        )

    def animate(
        self, portrait: np.ndarray, speech: Speech, fps: int, options: AnimationOptions = AnimationOptions()
    ) -> Iterator[np.ndarray]:
        try:
            face = FaceSelector.parse(options.face)
        except ValueError as exc:
            raise UserInputError(str(exc), error="invalid_face") from exc
        prepared = self.prepare(portrait, face)  # raises NoFaceError now, before any frame
        motion = face_motion(speech, fps)
        return self.animator.frames(prepared, motion, still=options.still, expression_scale=options.expression_scale)

    def describe(self) -> dict:
        return {"device": "cpu", "cached_portraits": len(self._portraits)}
