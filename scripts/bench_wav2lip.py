#!/usr/bin/env python3
"""Benchmark the Wav2Lip lip refiner: frames/s at its 96 px input, batched, and (when mediapipe,
cv2 and PyAV are installed) the whole refiner over 10 s of 25 fps frames, i.e. what LIP_REFINER=wav2lip
adds to a 10 s /generate.

Network only needs torch and numpy. Random weights unless --models-dir holds
wav2lip/wav2lip_gan.pth or wav2lip.pth (speed does not depend on the values). Prints ONE JSON line.

    python scripts/bench_wav2lip.py                          # cuda (fp16, channels-last) if present
    python scripts/bench_wav2lip.py --device cpu --batch-sizes 8 --frames 32 --skip-end-to-end
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runtime.engines.wav2lip.network import Wav2Lip  # noqa: E402  (torch only)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def network_frames_per_second(network, device, dtype, batch: int, frames: int) -> float:
    """Frames/s of the network alone: inputs already on the device, outputs left there."""
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    mel = torch.randn(batch, 1, 80, 16, device=device, dtype=dtype)
    faces = torch.rand(batch, 6, 96, 96, device=device, dtype=dtype).contiguous(memory_format=memory_format)
    with torch.inference_mode():
        for _ in range(3):
            network(mel, faces)
        _sync(device)
        steps = max(1, frames // batch)
        started = time.perf_counter()
        for _ in range(steps):
            network(mel, faces)
        _sync(device)
    return steps * batch / (time.perf_counter() - started)


def end_to_end(models_dir: Path, device: str, seconds: float = 10.0, fps: int = 25) -> dict:
    """The refiner over `seconds` of 512 px frames of the bundled portrait: face boxes, crops, network,
    feathered paste, frames back on the host."""
    from runtime.engines.wav2lip.refiner import LipRefiner, RefineStats
    from runtime.media.audio import Speech
    from PIL import Image

    portrait = np.asarray(Image.open(REPO / "runtime" / "assets" / "default_avatar.png").convert("RGB"))
    frames = [portrait] * int(seconds * fps)
    rng = np.random.default_rng(0)
    speech = Speech((0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32), 16000)
    refiner = LipRefiner.load(models_dir, device)
    list(refiner.refine(iter(frames[:refiner.batch_size]), speech, fps))  # warm-up
    _sync(torch.device(device))
    stats = RefineStats()
    started = time.perf_counter()
    count = sum(1 for _ in refiner.refine(iter(frames), speech, fps, stats))
    _sync(torch.device(device))
    elapsed = time.perf_counter() - started
    return {"speech_seconds": seconds, "frames": count, "refined": stats.refined, "seconds": round(elapsed, 3),
            "frames_per_second": round(count / elapsed, 1), "batch_size": refiner.batch_size}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    parser.add_argument("--frames", type=int, default=4096, help="frames timed per batch size")
    parser.add_argument("--models-dir", type=Path, help="MODELS_DIR with real weights (default: random)")
    parser.add_argument("--skip-end-to-end", action="store_true")
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    if args.models_dir is not None:
        from runtime.engines.wav2lip.checkpoint import find_checkpoint, load_wav2lip

        network = load_wav2lip(find_checkpoint(args.models_dir / "wav2lip"))
    else:
        network = Wav2Lip().eval()
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    network = network.to(device, dtype, memory_format=memory_format)
    per_batch = {b: round(network_frames_per_second(network, device, dtype, b, args.frames), 1)
                 for b in args.batch_sizes}
    result = {
        "bench": "wav2lip_refiner", "device": args.device,
        "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        "dtype": str(dtype).removeprefix("torch."), "input_px": 96, "torch": torch.__version__,
        "weights": "official" if args.models_dir else "random",
        "network_frames_per_second": per_batch, "best_network_frames_per_second": max(per_batch.values()),
        "end_to_end": None,
    }
    if not args.skip_end_to_end:
        try:
            models_dir = args.models_dir
            if models_dir is None:
                import tempfile

                models_dir = Path(tempfile.mkdtemp(prefix="bench-wav2lip-"))
                (models_dir / "wav2lip").mkdir()
                torch.save({"state_dict": {f"module.{k}": v for k, v in Wav2Lip().state_dict().items()},
                            "optimizer": None, "global_step": 0, "global_epoch": 0},
                           models_dir / "wav2lip" / "wav2lip.pth")
            result["end_to_end"] = end_to_end(models_dir, args.device)
        except ImportError as exc:  # mediapipe / cv2 / PyAV absent on a bare GPU machine
            result["end_to_end"] = {"skipped": f"needs the service's dependencies: {exc}"}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
