"""meshwarp: the embedded default backend. CPU only; its models ship in the mediapipe wheel."""
from __future__ import annotations

from typing import Iterator

import numpy as np

from ..engines.meshwarp import MeshWarpAnimator, PreparedPortrait
from ..media.audio import Speech
from ..media.landmarks import FaceLocator
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
        return cls(MeshWarpAnimator(FaceLocator(min_face_side=settings.min_face_side)))

    def prepare(self, portrait: np.ndarray) -> PreparedPortrait:
        return self._portraits.get_or_compute(portrait, self.animator.prepare)

    def animate(
        self, portrait: np.ndarray, speech: Speech, fps: int, options: AnimationOptions = AnimationOptions()
    ) -> Iterator[np.ndarray]:
        prepared = self.prepare(portrait)  # raises NoFaceError now, before any frame
        motion = face_motion(speech, fps)
        return self.animator.frames(prepared, motion, still=options.still, expression_scale=options.expression_scale)

    def describe(self) -> dict:
        return {"device": "cpu", "cached_portraits": len(self._portraits)}
