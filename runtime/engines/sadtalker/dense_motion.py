"""Dense motion network: sparse keypoint motion -> dense 3D flow and an occlusion map.

For each of the 15 keypoints (plus an identity "background" motion) the source feature volume
is warped as if only that keypoint moved; a 3D hourglass looks at those candidates and the
keypoint heatmaps and predicts a soft mask choosing, per voxel, which motion applies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..face_vid2vid import DenseMotionConfig, Hourglass
from ..motion_field import identity_grid_3d, keypoint_heatmaps, keypoint_motions, warp_volume

MASK_FLOOR = 1e-3  # mask weights below this are zeroed (upstream does the same)


class DenseMotionNetwork(nn.Module):
    def __init__(self, cfg: DenseMotionConfig, num_keypoints: int, feature_channels: int):
        super().__init__()
        self.num_keypoints = num_keypoints
        self.hourglass = Hourglass(cfg.block_expansion, (num_keypoints + 1) * (cfg.compress + 1),
                                   cfg.num_blocks, cfg.max_features)
        hourglass_out = self.hourglass.out_filters
        self.mask = nn.Conv3d(hourglass_out, num_keypoints + 1, 7, padding=3)
        self.compress = nn.Conv3d(feature_channels, cfg.compress, 1)
        self.norm = nn.BatchNorm3d(cfg.compress)
        self.occlusion = nn.Conv2d(hourglass_out * cfg.reshape_depth, 1, 7, padding=3)
        self.conv_dtype: torch.dtype | None = None  # set by the renderer for a mixed-precision hourglass

    def compress_source(self, feature_3d: torch.Tensor) -> torch.Tensor:
        """Source feature volume (B, 32, D, H, W) -> compressed volume (B, 4, D, H, W).

        Depends on the source image only, so the renderer computes it once per portrait.
        """
        return F.relu(self.norm(self.compress(feature_3d)))

    def forward(self, compressed: torch.Tensor, kp_driving: torch.Tensor,
                kp_source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """compressed: (1 or B, 4, D, H, W) source volume from `compress_source`;
        kp_driving, kp_source: (B, K, 3).

        Returns deformation (B, D, H, W, 3) (grid_sample coordinates into the source volume)
        and occlusion (B, 1, H, W) in [0, 1].
        """
        b = kp_driving.shape[0]
        k1 = self.num_keypoints + 1
        _, c, d, h, w = compressed.shape
        grid = identity_grid_3d(d, h, w, compressed.device, kp_driving.dtype)
        motions = keypoint_motions(grid, kp_driving, kp_source)  # (B, K+1, D, H, W, 3)

        deformed = warp_volume(compressed, motions.reshape(b * k1, d, h, w, 3).to(compressed.dtype))
        deformed = deformed.reshape(b, k1, c, d, h, w)

        heatmap = keypoint_heatmaps(kp_driving, grid) - keypoint_heatmaps(kp_source, grid)
        heatmap = torch.cat([heatmap.new_zeros(b, 1, d, h, w), heatmap], dim=1)
        hourglass_in = torch.cat([heatmap.unsqueeze(2).to(deformed.dtype), deformed], dim=2)
        hourglass_in = hourglass_in.view(b, -1, d, h, w)
        if self.conv_dtype is not None and self.conv_dtype != hourglass_in.dtype:
            prediction = self.hourglass(hourglass_in.to(self.conv_dtype)).to(hourglass_in.dtype)
        else:
            prediction = self.hourglass(hourglass_in)

        mask = F.softmax(self.mask(prediction).float(), dim=1)
        mask = torch.where(mask < MASK_FLOOR, torch.zeros_like(mask), mask)
        deformation = torch.einsum("bkdhwc,bkdhw->bdhwc", motions.float(), mask)

        occlusion = torch.sigmoid(self.occlusion(prediction.reshape(b, -1, h, w)))
        return deformation, occlusion
