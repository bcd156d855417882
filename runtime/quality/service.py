"""Scoring as a service: what POST /evaluate and `avatar score` call. Checks the limits, decodes the
portrait, and hands the clip to the QualityScorer loaded at startup."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

from ..errors import InvalidVideoError, VideoTooLargeError
from ..media.portrait import decode_portrait
from .scorer import QualityScorer

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)


class EvaluationService:
    def __init__(self, settings: "Settings", scorer: QualityScorer):
        self.settings = settings
        self.scorer = scorer

    @classmethod
    def load(cls, settings: "Settings", device_name: str = "cpu", locator=None) -> "EvaluationService":
        scorer = QualityScorer.load(settings.models_dir, device_name, locator, max_seconds=settings.max_evaluate_seconds)
        return cls(settings, scorer)

    def describe(self) -> dict:
        """The scorer's part of /health."""
        return self.scorer.describe()

    def evaluate(self, video: Union[bytes, Path], portrait: Optional[bytes] = None) -> dict:
        """The quality report of an mp4 (bytes or a file), scored against the portrait's file bytes if
        given. Raises UserInputError subclasses (4xx) for a bad video or portrait, or one without a face."""
        s = self.settings
        size = len(video) if isinstance(video, bytes) else Path(video).stat().st_size
        if size > s.max_video_bytes:
            raise VideoTooLargeError(f"video is {size} bytes; the limit is {s.max_video_bytes}")
        if size == 0:
            raise InvalidVideoError("video is empty")
        image = None
        if portrait is not None:
            image = decode_portrait(portrait, max_bytes=s.max_image_bytes, max_pixels=s.max_image_pixels,
                                    max_output_side=s.max_output_side)
        return self.scorer.score(video, image)
