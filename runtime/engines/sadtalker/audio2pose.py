"""Audio-to-pose net: the decoder half of a conditional VAE.

For each 32-frame window, a latent z ~ N(0, I) shifted by a learnt per-style bias, the
reference pose and the window's audio embeddings decode into 32 frames of head-pose motion
(3 rotation angles + 3 translations) relative to the reference pose.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import Audio2PoseConfig
from .layers import wav2lip_audio_encoder


class ResidualConv(nn.Module):
    """Pre-activation residual block with a projected shortcut; stride halves time only."""

    def __init__(self, in_channels: int, out_channels: int, stride):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.BatchNorm2d(in_channels), nn.ReLU(),
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
            nn.BatchNorm2d(out_channels), nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.conv_skip = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
            nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_block(x) + self.conv_skip(x)


class ResUnet(nn.Module):
    """U-Net over a (B, 1, T, 6) pose sequence treated as an image; output in (0, 1)."""

    def __init__(self, filters=(32, 64, 128, 256)):
        super().__init__()
        f0, f1, f2, f3 = filters
        self.input_layer = nn.Sequential(
            nn.Conv2d(1, f0, 3, padding=1), nn.BatchNorm2d(f0), nn.ReLU(),
            nn.Conv2d(f0, f0, 3, padding=1))
        self.input_skip = nn.Sequential(nn.Conv2d(1, f0, 3, padding=1))
        self.residual_conv_1 = ResidualConv(f0, f1, (2, 1))
        self.residual_conv_2 = ResidualConv(f1, f2, (2, 1))
        self.bridge = ResidualConv(f2, f3, (2, 1))
        self.upsample_1 = _Upsample(f3)
        self.up_residual_conv1 = ResidualConv(f3 + f2, f2, 1)
        self.upsample_2 = _Upsample(f2)
        self.up_residual_conv2 = ResidualConv(f2 + f1, f1, 1)
        self.upsample_3 = _Upsample(f1)
        self.up_residual_conv3 = ResidualConv(f1 + f0, f0, 1)
        self.output_layer = nn.Sequential(nn.Conv2d(f0, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.input_layer(x) + self.input_skip(x)
        x2 = self.residual_conv_1(x1)
        x3 = self.residual_conv_2(x2)
        x4 = self.bridge(x3)
        x6 = self.up_residual_conv1(torch.cat([self.upsample_1(x4), x3], dim=1))
        x8 = self.up_residual_conv2(torch.cat([self.upsample_2(x6), x2], dim=1))
        x10 = self.up_residual_conv3(torch.cat([self.upsample_3(x8), x1], dim=1))
        return self.output_layer(x10)


class _Upsample(nn.Module):
    """Transposed conv doubling the time axis."""

    def __init__(self, channels: int):
        super().__init__()
        self.upsample = nn.ConvTranspose2d(channels, channels, kernel_size=(2, 1), stride=(2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(x)


class PoseDecoder(nn.Module):
    def __init__(self, cfg: Audio2PoseConfig):
        super().__init__()
        self.sequence_length = cfg.sequence_length
        self.resunet = ResUnet()
        in_size = cfg.latent_size + cfg.sequence_length * cfg.audio_embedding_out + 6
        sizes = [in_size, *cfg.decoder_layer_sizes]
        self.MLP = nn.Sequential()
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            self.MLP.add_module(f"L{i}", nn.Linear(a, b))
            last = i + 2 == len(sizes)
            self.MLP.add_module("sigmoid" if last else f"A{i}", nn.Sigmoid() if last else nn.ReLU())
        self.pose_linear = nn.Linear(6, 6)
        self.linear_audio = nn.Linear(cfg.audio_embedding_in, cfg.audio_embedding_out)
        self.classbias = nn.Parameter(torch.zeros(cfg.num_classes, cfg.latent_size))

    def forward(self, z: torch.Tensor, style: torch.Tensor, ref_pose: torch.Tensor,
                audio_embedding: torch.Tensor) -> torch.Tensor:
        """z (B, 64), style (B,) long, ref_pose (B, 6), audio_embedding (B, 32, 512)
        -> pose motion (B, 32, 6) relative to ref_pose."""
        b = z.shape[0]
        audio = self.linear_audio(audio_embedding).reshape(b, -1)
        hidden = self.MLP(torch.cat([ref_pose, z + self.classbias[style], audio], dim=-1))
        pose = self.resunet(hidden.reshape(b, 1, self.sequence_length, -1))
        return self.pose_linear(pose.squeeze(1))


class _AudioEncoder(nn.Module):
    """Holds the Wav2Lip encoder under the checkpoint's `audio_encoder.audio_encoder` name."""

    def __init__(self):
        super().__init__()
        self.audio_encoder = wav2lip_audio_encoder()

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        """mels (N, 1, 80, 16) -> (N, 512)."""
        return self.audio_encoder(mels).flatten(1)


class Audio2Pose(nn.Module):
    def __init__(self, cfg: Audio2PoseConfig = Audio2PoseConfig()):
        super().__init__()
        self.cfg = cfg
        self.audio_encoder = _AudioEncoder()
        self.netG = nn.Module()
        self.netG.decoder = PoseDecoder(cfg)

    def decode_windows(self, z: torch.Tensor, style: torch.Tensor, ref_pose: torch.Tensor,
                       window_mels: torch.Tensor) -> torch.Tensor:
        """Decode B independent windows at once.

        z (B, 64); style (B,); ref_pose (B, 6); window_mels (B, 32, 1, 80, 16)
        -> pose motion (B, 32, 6).
        """
        b, t = window_mels.shape[:2]
        embedding = self.audio_encoder(window_mels.reshape(b * t, *window_mels.shape[2:]))
        return self.netG.decoder(z, style, ref_pose, embedding.view(b, t, -1))
