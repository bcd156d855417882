"""QualityScorer: one pass over a clip's frames gives every metric; SyncNet's when its weights load."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import NoFaceError
from ..media.audio import Speech, resample
from ..media.landmarks import FaceLocator, square_around
from . import metrics
from .clip import Source, iter_frames, read_audio_and_timing

log = logging.getLogger(__name__)

IDENTITY_EVERY = 5  # frames between identity comparisons
REDETECT_AFTER = 5  # frames without a mesh before the face is searched for again
MESH_POINTS = 468  # the canonical mesh (no iris points), as video-mode tracking returns it


class QualityScorer:
    """Scores mp4 clips: lip sync, A/V timing, identity, jitter, sharpness, and SyncNet's LSE-C/LSE-D.

    Loads once (the face locator, SyncNet if MODELS_DIR/syncnet/syncnet_v2.model loads); score() is
    thread-safe for the weight-free part and runs SyncNet on the cpu or the given device."""

    def __init__(self, locator: FaceLocator, syncnet=None, syncnet_unavailable: str = "", max_seconds: float = 120.0):
        self.locator = locator
        self.syncnet = syncnet
        self.syncnet_unavailable = syncnet_unavailable or ("" if syncnet else "no SyncNet was loaded")
        self.max_seconds = max_seconds

    @classmethod
    def load(cls, models_dir: Path, device: str = "cpu", locator: Optional[FaceLocator] = None,
             max_seconds: float = 120.0) -> "QualityScorer":
        """With SyncNet when torch and its weights are there; otherwise says why in every report."""
        syncnet, reason = None, ""
        try:
            from .lse import SyncNetScorer

            syncnet = SyncNetScorer.load(models_dir, device)
        except ImportError as exc:
            reason = f"torch is not installed (the engines extra): {exc}"
        except Exception as exc:  # CheckpointError: missing or unreadable weights
            reason = str(exc)
        if reason:
            log.info("SyncNet scores are off: %s", reason)
        return cls(locator or FaceLocator(), syncnet, reason, max_seconds)

    def describe(self) -> dict:
        return {"syncnet": self.syncnet is not None, "syncnet_unavailable": self.syncnet_unavailable or None}

    def score(self, video: Source, portrait: Optional[np.ndarray] = None) -> dict:
        """JSON-ready report of an mp4 (path or bytes); portrait (H, W, 3) RGB uint8 or None (then the
        clip's first face is the identity reference). Raises InvalidVideoError, NoFaceError."""
        started = time.perf_counter()
        samples, rate, audio_duration, audio_offset, fps, declared_duration = read_audio_and_timing(video, self.max_seconds)
        reference_points = reference_patch = portrait_sharpness = None
        if portrait is not None:
            reference_points = self._portrait_points(portrait)
            reference_patch = metrics.upper_face_patch(portrait, reference_points, reference_points)
            portrait_sharpness = metrics.mouth_sharpness(portrait, reference_points)
        track = self._track(video, reference_points, reference_patch, want_crops=self.syncnet is not None)
        if not np.isfinite(track["points"][:, 0, 0]).any():
            raise NoFaceError("no face was found in the video")
        points, frames = track["points"], len(track["points"])
        video_duration = frames / fps
        lip_sync = metrics.lip_sync(points, samples, rate, fps)
        report = {
            "clip": {
                "frames": frames, "fps": round(fps, 3), "width": track["width"], "height": track["height"],
                "face_frames": int(np.isfinite(points[:, 0, 0]).sum()),
                "video_duration_s": round(video_duration, 3),
                "audio_duration_s": metrics._round(audio_duration, 3),
            },
            "lip_sync": lip_sync,
            "av_sync": {
                "offset_frames": lip_sync["best_lag_frames"],
                "offset_ms": None if lip_sync["best_lag_frames"] is None else round(1000 * lip_sync["best_lag_frames"] / fps),
                "audio_start_offset_ms": metrics._round(1000 * audio_offset, 1),
                "duration_difference_s": metrics._round(audio_duration - video_duration, 3),
            },
            "identity": metrics.identity(track["similarities"], "portrait" if portrait is not None else "first_frame"),
            "jitter": metrics.landmark_jitter(points),
            "sharpness": metrics.sharpness(track["sharpness"], portrait_sharpness),
            "syncnet": self._syncnet(track.get("crops"), samples, rate, fps),
        }
        report["seconds"] = round(time.perf_counter() - started, 3)
        return report

    def _portrait_points(self, portrait: np.ndarray) -> np.ndarray:
        """(468, 2) mesh points of the portrait, found as the clip's are (same crop, same mesh model), so
        that comparing them measures the faces and not two landmark models."""
        import mediapipe as mp

        crop_box = square_around(self.locator.detect_box(portrait), portrait.shape, scale=2.2)
        with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False) as mesh:
            points = _mesh_points(mesh, portrait, crop_box)
        if points is None:
            raise NoFaceError("a face-like region was found in the portrait but no face mesh fits it")
        return points

    def _track(self, video: Source, reference_points, reference_patch, want_crops: bool) -> dict:
        """Face mesh on every frame (video mode, on a crop around the face) and the per-frame measures."""
        import mediapipe as mp

        points, similarities, sharpness, crops = [], [], [], []
        crop_box, misses, last_box, width, height = None, 0, None, 0, 0
        with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=False) as mesh:
            for index, frame in enumerate(iter_frames(video)):
                height, width = frame.shape[:2]
                found = None
                if crop_box is None or misses >= REDETECT_AFTER:
                    try:
                        crop_box = square_around(self.locator.detect_box(frame), frame.shape, scale=2.2)
                        misses = 0
                    except NoFaceError:
                        crop_box = None
                if crop_box is not None:
                    found = _mesh_points(mesh, frame, crop_box)
                misses = 0 if found is not None else misses + 1
                points.append(found if found is not None else np.full((MESH_POINTS, 2), np.nan, np.float32))
                if found is None:
                    if want_crops:
                        crops.append(self._syncnet_crop(frame, last_box))
                    continue
                sharpness.append(metrics.mouth_sharpness(frame, found))
                if reference_points is None:  # the clip's first face is the reference
                    reference_points = found
                    reference_patch = metrics.upper_face_patch(frame, found, found)
                if index % IDENTITY_EVERY == 0 and reference_patch is not None:
                    patch = metrics.upper_face_patch(frame, found, reference_points)
                    if patch is not None:
                        similarities.append(float((patch * reference_patch).sum()))
                last_box = (*found.min(axis=0), *found.max(axis=0))
                if want_crops:
                    crops.append(self._syncnet_crop(frame, last_box))
        return {"points": np.array(points) if points else np.zeros((0, MESH_POINTS, 2), np.float32),
                "similarities": similarities, "sharpness": sharpness, "width": width, "height": height,
                "crops": np.array(crops) if want_crops and crops else None}

    @staticmethod
    def _syncnet_crop(frame: np.ndarray, box) -> np.ndarray:
        from .lse import face_crop

        if box is None:  # no face yet: the frame's centre, so windows stay aligned with the audio
            height, width = frame.shape[:2]
            side = min(height, width) / 2
            box = (width / 2 - side / 2, height / 2 - side / 2, width / 2 + side / 2, height / 2 + side / 2)
        return face_crop(np.ascontiguousarray(frame[..., ::-1]), box)

    def _syncnet(self, crops: Optional[np.ndarray], samples: np.ndarray, rate: int, fps: float) -> dict:
        if self.syncnet is None:
            return {"available": False, "reason": self.syncnet_unavailable, "lse_c": None, "lse_d": None,
                    "offset_frames": None}
        from .lse import SAMPLE_RATE, VIDEO_FPS, int16_scale

        if not len(samples):
            return {"available": False, "reason": "the video has no audio", "lse_c": None, "lse_d": None,
                    "offset_frames": None}
        # SyncNet works at 25 fps: take the frame showing at each 25 fps instant, as ffmpeg -r 25 would.
        count = int(len(crops) * VIDEO_FPS / fps)
        crops = crops[np.minimum(len(crops) - 1, (np.arange(count) * fps / VIDEO_FPS).astype(int))]
        speech = resample(Speech(samples, rate), SAMPLE_RATE)
        try:
            result = self.syncnet.score(crops, int16_scale(speech.samples))
        except ValueError as exc:
            return {"available": False, "reason": str(exc), "lse_c": None, "lse_d": None, "offset_frames": None}
        return {"available": True, **result.as_dict()}


def _mesh_points(mesh, image: np.ndarray, crop_box: tuple[int, int, int, int]) -> Optional[np.ndarray]:
    """(468, 2) float32 mesh points in image pixels from a MediaPipe FaceMesh run on the crop, or None."""
    x0, y0, x1, y1 = crop_box
    result = mesh.process(np.ascontiguousarray(image[y0:y1, x0:x1]))
    if not result.multi_face_landmarks:
        return None
    found = np.array([(p.x, p.y) for p in result.multi_face_landmarks[0].landmark[:MESH_POINTS]], dtype=np.float32)
    return found * np.array([x1 - x0, y1 - y0], np.float32) + np.array([x0, y0], np.float32)
