"""Hyperparameters of the SadTalker networks, carried as our own config.

Upstream keeps these in `src/config/{facerender,facerender_still,auido2exp,auido2pose}.yaml`
(absent from the PyPI packaging); the values below are the ones the official checkpoints were
trained with, so changing any of them breaks strict loading.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..dense_motion_config import DenseMotionConfig


@dataclass(frozen=True)
class KeypointDetectorConfig:
    """Canonical 3D keypoint detector (an hourglass over a 1/4-scale image)."""

    num_keypoints: int = 15
    image_channels: int = 3
    block_expansion: int = 32
    max_features: int = 1024
    num_blocks: int = 5
    reshape_channels: int = 16384  # 1024 channels * 16 depth slices
    reshape_depth: int = 16
    temperature: float = 0.1
    scale_factor: float = 0.25


@dataclass(frozen=True)
class GeneratorConfig:
    """Occlusion-aware SPADE generator (face-vid2vid style 3D feature warp + SPADE decoder)."""

    num_keypoints: int = 15
    image_channels: int = 3
    feature_channels: int = 32
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    reshape_channels: int = 32
    reshape_depth: int = 16
    num_resblocks: int = 6
    dense_motion: DenseMotionConfig = DenseMotionConfig()
    # SPADE decoder widths (hard-coded upstream).
    decoder_in_channels: int = 256
    decoder_out_channels: int = 64
    spade_hidden: int = 128


@dataclass(frozen=True)
class MappingConfig:
    """3DMM coefficient window -> head pose bins, translation and keypoint deltas."""

    coeff_channels: int  # 70 (crop preprocessing) or 73 (full: + crop scale and shift)
    descriptor_channels: int = 1024
    num_layers: int = 3
    num_keypoints: int = 15
    num_bins: int = 66


# mapping_00229 goes with upstream's `crop` preprocessing, mapping_00109 with `full` (paste back).
MAPPING_CHECKPOINTS: dict[str, tuple[str, int]] = {
    "crop": ("mapping_00229-model.pth.tar", 70),
    "full": ("mapping_00109-model.pth.tar", 73),
}


@dataclass(frozen=True)
class Audio2PoseConfig:
    """CVAE decoder that samples head-pose motion for 32-frame audio windows."""

    sequence_length: int = 32
    latent_size: int = 64
    num_classes: int = 46  # pose styles
    audio_embedding_in: int = 512
    audio_embedding_out: int = 6
    decoder_layer_sizes: tuple[int, ...] = (128, 192)
    # Training-only encoder widths, needed to describe the checkpoint layout exactly.
    encoder_layer_sizes: tuple[int, ...] = (192, 128)
    discriminator_input_channels: int = 6


@dataclass(frozen=True)
class AudioConfig:
    """Wav2Lip mel spectrogram settings (upstream `src/utils/hparams.py`)."""

    sample_rate: int = 16000
    n_fft: int = 800
    hop_length: int = 200
    win_length: int = 800
    num_mels: int = 80
    fmin: float = 55.0
    fmax: float = 7600.0
    preemphasis: float = 0.97
    min_level_db: float = -100.0
    ref_level_db: float = 20.0
    max_abs_value: float = 4.0
    mel_steps_per_frame: int = 16  # mel columns seen by the audio encoder for one video frame
    fps: int = 25  # the networks were trained on 25 fps; other rates are resampled after


@dataclass(frozen=True)
class PipelineConfig:
    semantic_radius: int = 13  # mapping net sees coefficients of frames t-13..t+13
    pose_smoothing_window: int = 13  # Savitzky-Golay window over the pose sequence
    pose_smoothing_order: int = 2
    recon_input_size: int = 224
    recon_rescale_factor: float = 102.0


# The five 3D landmarks (left eye, right eye, nose tip, left and right mouth corner) of the
# BFM mean face that Deep3DFaceRecon aligns portraits to (from `similarity_Lm3D_all.mat`,
# reduced to 5 points the way upstream's `load_lm3d` does).
RECON_REFERENCE_LANDMARKS_3D = np.array(
    [
        [-0.31148657, 0.29036078, 0.13377953],
        [0.30979887, 0.28972036, 0.13179526],
        [0.0032535, -0.04617932, 0.55244243],
        [-0.25216928, -0.38133916, 0.22405732],
        [0.2484662, -0.38128236, 0.22235769],
    ],
    dtype=np.float32,
)

SAFETENSORS_NAME = "SadTalker_V0.0.2_{size}.safetensors"
SUPPORTED_SIZES = (256, 512)
