"""SyncNet v2 with upstream's module names (netcnnaud, netfcaud, netcnnlip, netfclip), so that the
official `syncnet_v2.model` loads strictly.

Audio stream: MFCC (N, 1, 13, 20) = 13 coefficients x 0.2 s at 100 Hz -> (N, 1024).
Lip stream: 5 face crops (N, 3, 5, 224, 224), BGR 0-255 unnormalized as upstream feeds them -> (N, 1024).
"""
from __future__ import annotations

import torch
from torch import nn


def _conv_bn_relu(conv: nn.Module, channels: int, norm=nn.BatchNorm2d) -> list[nn.Module]:
    return [conv, norm(channels), nn.ReLU(inplace=True)]


def _embedding_head(features: int = 512, embedding: int = 1024) -> nn.Sequential:
    return nn.Sequential(nn.Linear(features, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embedding))


class SyncNet(nn.Module):
    def __init__(self, embedding: int = 1024):
        super().__init__()
        # (13, 20) -> (13, 20) -> (11, 9) -> (5, 4) -> (1, 1)
        self.netcnnaud = nn.Sequential(
            *_conv_bn_relu(nn.Conv2d(1, 64, 3, 1, 1), 64),
            nn.MaxPool2d(1, 1),
            *_conv_bn_relu(nn.Conv2d(64, 192, 3, 1, 1), 192),
            nn.MaxPool2d(3, (1, 2)),
            *_conv_bn_relu(nn.Conv2d(192, 384, 3, padding=1), 384),
            *_conv_bn_relu(nn.Conv2d(384, 256, 3, padding=1), 256),
            *_conv_bn_relu(nn.Conv2d(256, 256, 3, padding=1), 256),
            nn.MaxPool2d(3, 2),
            *_conv_bn_relu(nn.Conv2d(256, 512, (5, 4), padding=0), 512),
        )
        self.netfcaud = _embedding_head(512, embedding)
        self.netfclip = _embedding_head(512, embedding)
        # (5, 224, 224) -> (1, 109, 109) -> (1, 54, 54) -> (1, 26, 26) -> (1, 13, 13) -> (1, 6, 6) -> (1, 1, 1)
        self.netcnnlip = nn.Sequential(
            *_conv_bn_relu(nn.Conv3d(3, 96, (5, 7, 7), (1, 2, 2), 0), 96, nn.BatchNorm3d),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_conv_bn_relu(nn.Conv3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), 256, nn.BatchNorm3d),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, nn.BatchNorm3d),
            *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, nn.BatchNorm3d),
            *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, nn.BatchNorm3d),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_conv_bn_relu(nn.Conv3d(256, 512, (1, 6, 6), padding=0), 512, nn.BatchNorm3d),
        )

    def embed_audio(self, mfcc: torch.Tensor) -> torch.Tensor:
        """(N, 1, 13, 20) MFCC windows -> (N, 1024); upstream's forward_aud."""
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def embed_lips(self, crops: torch.Tensor) -> torch.Tensor:
        """(N, 3, 5, 224, 224) face crops -> (N, 1024); upstream's forward_lip."""
        return self.netfclip(self.netcnnlip(crops).flatten(1))
