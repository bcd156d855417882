"""meshwarp: the embedded default backend. CPU only; its models ship in the mediapipe wheel."""
from __future__ import annotations

from typing import Iterator, Optional, Union

import numpy as np
from pydantic import Field, field_validator

from ..engines.meshwarp import MeshWarpAnimator, PreparedPortrait
from ..media.audio import Speech
from ..media.landmarks import FaceLocator, FaceSelector
from ..media.speech_motion import face_motion
from .base import AnimationOptions, AvatarBackend, BackendOptions, PortraitCache


class MeshWarpOptions(BackendOptions):
    face: Optional[Union[int, str]] = Field(None, description="Which face of a group photo talks: an index by size "
                                                  "(0 = the largest, the default) or a point 'x,y' in the portrait's pixels.")

    @field_validator("face")
    @classmethod
    def _a_face_selector(cls, value: Optional[Union[int, str]]) -> Optional[Union[int, str]]:
        FaceSelector.parse(value)  # ValueError naming the two accepted forms
        return value


class MeshWarpBackend(AvatarBackend):
    name = "meshwarp"
    display_name = "MeshWarp"
    options_model = MeshWarpOptions
    prepared_portrait_type = PreparedPortrait

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

    def adopt_prepared(self, portrait: np.ndarray, prepared: PreparedPortrait) -> None:
        self._portraits.put(portrait, prepared, key_suffix=repr(FaceSelector()))  # as prepare() keys it

    @property
    def preparations(self) -> int:
        return self._portraits.computed

    def animate(self, portrait: np.ndarray, speech: Speech, fps: int, frames: int,
                options: AnimationOptions = AnimationOptions(),  # noqa: B008 (frozen)
                backend_options: Optional[MeshWarpOptions] = None) -> Iterator[np.ndarray]:
        face = FaceSelector.parse((backend_options or MeshWarpOptions()).face)
        prepared = self.prepare(portrait, face)  # NoFaceError now, before any frame
        motion = face_motion(speech, fps)
        return self.animator.frames(prepared, motion, still=options.still, expression_scale=options.expression_scale)

    def describe(self) -> dict:
        return {"device": "cpu", "cached_portraits": len(self._portraits)}
