"""meshwarp: the embedded default backend. CPU only; its models ship in the mediapipe wheel."""
from __future__ import annotations

from typing import Iterator, Optional, Union

import numpy as np
from pydantic import Field, field_validator

from ..engines.meshwarp import MeshWarpAnimator, PreparedPortrait
from ..media.audio import Speech
from ..media.landmarks import FaceLocator, FaceSelector
from ..media.speech_motion import FaceMotion, face_motion
from .base import AnimationOptions, AvatarBackend, AvatarSession, BackendOptions, PortraitCache


class MeshWarpOptions(BackendOptions):
    face: Optional[Union[int, str]] = Field(None, description="Which face of a group photo talks: an index by size "
                                                  "(0 = the largest, the default) or a point 'x,y' in the portrait's pixels.")

    @field_validator("face")
    @classmethod
    def _a_face_selector(cls, value: Optional[Union[int, str]]) -> Optional[Union[int, str]]:
        FaceSelector.parse(value)  # ValueError naming the two accepted forms
        return value


class MeshWarpSession(AvatarSession):
    """Frames depend only on each frame's motion: nothing to carry but the prepared portrait."""

    unit_frames = 5

    def __init__(self, animator: MeshWarpAnimator, prepared: PreparedPortrait, options: AnimationOptions):
        self.animator, self.prepared, self.options = animator, prepared, options

    def render(self, motion: FaceMotion, speech: Speech) -> Iterator[np.ndarray]:
        return self.animator.frames(self.prepared, motion, still=self.options.still,
                                    expression_scale=self.options.expression_scale)


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
        session = self.start_session(portrait, fps, options, backend_options)  # NoFaceError now, before any frame
        return session.render(face_motion(speech, fps), speech)

    def start_session(self, portrait: np.ndarray, fps: int,
                      options: AnimationOptions = AnimationOptions(),  # noqa: B008 (frozen)
                      backend_options: Optional[MeshWarpOptions] = None) -> MeshWarpSession:
        face = FaceSelector.parse((backend_options or MeshWarpOptions()).face)
        return MeshWarpSession(self.animator, self.prepare(portrait, face), options)

    def describe(self) -> dict:
        return {"device": "cpu", "cached_portraits": len(self._portraits)}
