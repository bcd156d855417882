"""LSE-C and LSE-D (Prajwal et al. 2020, after Chung & Zisserman 2016) with our SyncNet.

As upstream's SyncNetInstance.evaluate computes them: 5-frame windows of 224 px face crops and their
0.2 s MFCC windows are embedded; for each audio shift of -15..+15 frames the mean distance between
video and shifted audio embeddings; LSE-D = the smallest mean distance, LSE-C = median - smallest,
the A/V offset = 15 - the index of the smallest (positive: the lips come after the sound).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..engines.syncnet.checkpoint import CHECKPOINT_NAME, load_syncnet
from ..engines.syncnet.mfcc import SAMPLE_RATE, mfcc
from ..engines.syncnet.network import SyncNet

VIDEO_FPS = 25  # SyncNet's frame rate; upstream converts every video to it first
WINDOW_FRAMES = 5
MFCC_PER_FRAME = 4  # 100 MFCC frames a second / 25 video frames
MAX_SHIFT = 15  # frames each way (upstream's vshift)
CROP_SIZE = 224
CROP_SCALE = 0.40  # upstream's crop_scale: context around the detected face box
PAD_VALUE = 110  # upstream pads frames with this grey before cropping


@dataclass(frozen=True)
class SyncScore:
    offset_frames: int
    lse_c: float  # confidence: median - minimum of the mean distances over shifts
    lse_d: float  # the minimum mean distance
    mean_distances: np.ndarray  # (2 * MAX_SHIFT + 1,) for shifts -15..15 of the audio

    def as_dict(self) -> dict:
        return {"lse_c": round(self.lse_c, 4), "lse_d": round(self.lse_d, 4), "offset_frames": self.offset_frames}


def search_offset(video_embeddings: torch.Tensor, audio_embeddings: torch.Tensor, max_shift: int = MAX_SHIFT) -> SyncScore:
    """video, audio (N, D) embeddings of the same N windows -> the best A/V shift and LSE-C / LSE-D.

    Audio is zero-padded by max_shift windows each side, as upstream's calc_pdist does; distances are
    torch's pairwise_distance (with its eps), averaged over the windows."""
    span = 2 * max_shift + 1
    padded = F.pad(audio_embeddings, (0, 0, max_shift, max_shift))
    shifted = padded.unfold(0, span, 1)  # (N, D, span): window i against audio i-max_shift..i+max_shift
    distances = torch.linalg.vector_norm(video_embeddings[:, :, None] - shifted + 1e-6, dim=1)  # (N, span)
    mean = distances.mean(0)
    smallest, index = torch.min(mean, 0)
    return SyncScore(
        offset_frames=int(max_shift - index),
        lse_c=float(torch.median(mean) - smallest),
        lse_d=float(smallest),
        mean_distances=mean.numpy(),
    )


def face_crop(frame_bgr: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """Upstream's crop of a face box (x0, y0, x1, y1): a square of side 2s(1 + CROP_SCALE) around the box
    centre, shifted down by s * CROP_SCALE (s = half the box's longer side), grey-padded, to 224 px."""
    half = max(box[2] - box[0], box[3] - box[1]) / 2
    pad = int(half * (1 + 2 * CROP_SCALE))
    framed = cv2.copyMakeBorder(frame_bgr, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    cy, cx = (box[1] + box[3]) / 2 + pad, (box[0] + box[2]) / 2 + pad
    face = framed[int(cy - half):int(cy + half * (1 + 2 * CROP_SCALE)),
                  int(cx - half * (1 + CROP_SCALE)):int(cx + half * (1 + CROP_SCALE))]
    return cv2.resize(face, (CROP_SIZE, CROP_SIZE))


class SyncNetScorer:
    """Loads SyncNet once; score() takes the face crops and the speech of one clip."""

    def __init__(self, network: SyncNet, device: str = "cpu", batch_size: int = 20):
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.batch_size = batch_size

    @classmethod
    def load(cls, models_dir: Path, device: str = "cpu") -> "SyncNetScorer":
        return cls(load_syncnet(Path(models_dir) / "syncnet" / CHECKPOINT_NAME), device)

    @torch.inference_mode()
    def embed(self, crops: np.ndarray, samples_int16: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """crops (F, 224, 224, 3) BGR uint8 at 25 fps, samples 16 kHz at int16 scale ->
        video and audio embeddings (N, 1024) of the N = min(F, samples / 640) - 5 windows."""
        cepstra = mfcc(samples_int16).T.astype(np.float32)  # (13, T)
        usable = min(len(crops), len(samples_int16) // (SAMPLE_RATE // VIDEO_FPS))
        windows = usable - WINDOW_FRAMES
        if windows < 1:
            raise ValueError(f"the clip is too short for SyncNet ({usable} frames; more than {WINDOW_FRAMES} needed)")
        video = torch.from_numpy(np.ascontiguousarray(crops[:usable])).permute(3, 0, 1, 2).float()  # (3, F, 224, 224)
        audio = torch.from_numpy(cepstra)[None]  # (1, 13, T)
        video_out, audio_out = [], []
        for first in range(0, windows, self.batch_size):
            indices = range(first, min(windows, first + self.batch_size))
            lips = torch.stack([video[:, i:i + WINDOW_FRAMES] for i in indices]).to(self.device)
            sound = torch.stack([audio[:, :, i * MFCC_PER_FRAME:i * MFCC_PER_FRAME + 20] for i in indices]).to(self.device)
            video_out.append(self.network.embed_lips(lips).cpu())
            audio_out.append(self.network.embed_audio(sound).cpu())
        return torch.cat(video_out), torch.cat(audio_out)

    def score(self, crops: np.ndarray, samples_int16: np.ndarray) -> SyncScore:
        video, audio = self.embed(crops, samples_int16)
        return search_offset(video, audio)


def int16_scale(samples: np.ndarray) -> np.ndarray:
    """float [-1, 1] -> int16 values, as ffmpeg's pcm_s16le extraction in upstream's pipeline writes them."""
    return np.clip(np.rint(samples.astype(np.float64) * 32768), -32768, 32767).astype(np.int16)
