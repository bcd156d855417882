"""The lip refiner on CUDA (fp16 network, crops and paste on the device, its own stream and worker
thread) against the same refiner on the CPU (skipped without a GPU).

Stated tolerance: the same face boxes; pixels outside the feathered mask untouched; refined pixels
within 1 level on average and 12 at most of the CPU's (fp16 network, fp32 resampling)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from runtime.engines.wav2lip.refiner import LipRefiner, RefineStats, feather_mask
from runtime.media.audio import Speech

from testkit.quality_references import write_wav2lip_checkpoint

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def swaying(portrait: np.ndarray, count: int) -> list[np.ndarray]:
    import cv2

    return [cv2.warpAffine(portrait, np.float32([[1, 0, 3 * np.sin(i / 4)], [0, 1, 2 * np.cos(i / 5)]]),
                           portrait.shape[1::-1], borderMode=cv2.BORDER_REPLICATE) for i in range(count)]


def refined_with_boxes(refiner: LipRefiner, frames, speech) -> tuple[list[np.ndarray], list, RefineStats]:
    boxes = []
    refine_batch = refiner.refine_batch
    refiner.refine_batch = lambda batch, windows, batch_boxes: boxes.extend(batch_boxes) or refine_batch(
        batch, windows, batch_boxes)
    stats = RefineStats()
    return list(refiner.refine(iter(frames), speech, 25, stats)), boxes, stats


def test_the_refiner_on_cuda_draws_what_it_draws_on_the_cpu_and_only_inside_its_mask(astronaut, face_locator, tmp_path):
    write_wav2lip_checkpoint(tmp_path / "wav2lip" / "wav2lip_gan.pth", seed=5)
    frames = swaying(astronaut, 24)
    rng = np.random.default_rng(1)
    speech = Speech((0.2 * rng.standard_normal(16_000)).astype(np.float32), 16_000)
    on_gpu, gpu_boxes, stats = refined_with_boxes(
        LipRefiner.load(tmp_path, "cuda", face_locator, batch_size=16), frames, speech)
    on_cpu, cpu_boxes, _ = refined_with_boxes(LipRefiner.load(tmp_path, "cpu", face_locator, batch_size=16), frames, speech)

    assert len(on_gpu) == len(frames) and stats.refined == len(frames) and gpu_boxes == cpu_boxes
    differences = []
    for before, gpu, cpu, (x0, y0, x1, y1) in zip(frames, on_gpu, on_cpu, gpu_boxes):
        inside = np.zeros(before.shape[:2], bool)
        inside[y0:y1, x0:x1] = feather_mask(y1 - y0, x1 - x0)[:, :, 0] > 0
        assert not np.any(np.any(gpu != before, axis=2) & ~inside)
        assert np.any(gpu != before)
        differences.append(np.abs(gpu.astype(int) - cpu)[inside])
    differences = np.concatenate(differences)
    assert differences.mean() < 1.0 and differences.max() <= 12, (differences.mean(), differences.max())
