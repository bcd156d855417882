#!/usr/bin/env python3
"""Benchmark the Wav2Lip lip refiner: frames/s of the network at its 96 px input, batched, and
beside it (when mediapipe and cv2 are installed) of the whole refiner over 10 s of 25 fps frames of
the bundled portrait swaying (face tracking, crops, network, feathered paste, frames back on the
host), i.e. what LIP_REFINER=wav2lip adds to a 10 s /generate when it does not overlap rendering.

The whole refiner's figure comes with where its time went (ms a frame: the face tracker, the mel
front end, the device's work (upload, crops, network, paste, download) and within it the network,
and the host's work around it), `host_work_ms_per_frame` (tracking + mel + host work: what a frame
costs the CPU when the device is a GPU), the process's CPU time a frame (all threads; it includes
the device work when the device is the CPU), and how often the face detector ran and found the face.
--stand-in-network swaps the network for one that returns its input's face, so that on a machine
without a GPU the host's share shows alone.

Network only needs torch and numpy. Random weights unless --models-dir holds
wav2lip/wav2lip_gan.pth or wav2lip.pth (speed does not depend on the values). Prints ONE JSON line.

    python scripts/bench_wav2lip.py                          # cuda (fp16, channels-last) if present
    python scripts/bench_wav2lip.py --device cpu --batch-sizes 8 --frames 16 --stand-in-network
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


class StandInNetwork(torch.nn.Module):
    """Wav2Lip's interface without its work: returns the unmasked input face (B, 3, 96, 96)."""

    def forward(self, mel: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        return faces[:, 3:]


class Timer:
    """Wall seconds spent inside wrapped calls (device work synchronized before the clock stops)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = {}

    def wrap(self, owner, name: str, label: str):
        """Time owner.name under `label`; returns what puts the original back."""
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            result = original(*args, **kwargs)
            _sync(self.device)
            self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - started
            return result

        setattr(owner, name, timed)
        return lambda: setattr(owner, name, original)


def swaying_frames(seconds: float, fps: int) -> list[np.ndarray]:
    """The bundled portrait moving as a talking head does: a few px of sway, (512, 512, 3) RGB uint8."""
    import cv2
    from PIL import Image

    portrait = np.asarray(Image.open(REPO / "runtime" / "assets" / "default_avatar.png").convert("RGB"))
    frames = []
    for index in range(int(seconds * fps)):
        phase = 2 * np.pi * index / fps
        dx, dy, angle = 6 * np.sin(0.5 * phase), 3 * np.sin(0.8 * phase), 2 * np.sin(0.3 * phase)
        matrix = cv2.getRotationMatrix2D((256, 256), angle, 1.0)
        matrix[:, 2] += (dx, dy)
        frames.append(cv2.warpAffine(portrait, matrix, (512, 512), borderMode=cv2.BORDER_REPLICATE))
    return frames


def end_to_end(models_dir: Path, device: str, *, seconds: float = 10.0, fps: int = 25,
               stand_in: bool = False) -> dict:
    """The whole refiner over `seconds` of swaying 512 px frames and random speech."""
    from runtime.engines.wav2lip import refiner as refiner_module
    from runtime.engines.wav2lip.refiner import LipRefiner, RefineStats
    from runtime.media.audio import Speech

    frames = swaying_frames(seconds, fps)
    rng = np.random.default_rng(0)
    speech = Speech((0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32), 16000)
    refiner = LipRefiner.load(models_dir, device)
    if stand_in:
        refiner.network = StandInNetwork()
    list(refiner.refine(iter(frames[:refiner.batch_size]), speech, fps))  # warm-up
    _sync(torch.device(device))

    timer = Timer(torch.device(device))
    unwrap = [timer.wrap(refiner, "predict", "network"), timer.wrap(refiner, "refine_batch", "refine_batch"),
              timer.wrap(refiner_module, "melspectrogram", "mel")]
    if hasattr(refiner, "redraw"):  # on the device: upload, crops, network, paste, download
        unwrap.append(timer.wrap(refiner, "redraw", "device"))
    if hasattr(refiner_module, "FaceTracker"):
        unwrap.append(timer.wrap(refiner_module.FaceTracker, "track", "tracking"))
    detector_calls = []
    detect = refiner.locator._detect_boxes  # the one MediaPipe call of every detection
    refiner.locator._detect_boxes = lambda *args: detector_calls.append(1) or detect(*args)

    stats = RefineStats()
    try:
        cpu_started, started = time.process_time(), time.perf_counter()
        count = sum(1 for _ in refiner.refine(iter(frames), speech, fps, stats))
        _sync(torch.device(device))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        for undo in unwrap:
            undo()

    per_frame = {label: round(1000 * value / count, 3) for label, value in timer.seconds.items()}
    # Host work: tracking, mel, and refine_batch's own (gathering regions, copying frames). Before the
    # device did the geometry, refine_batch did everything but the network (and tracked, in it).
    inside = per_frame.pop("device", per_frame.get("network", 0.0))
    per_frame["host_in_refine_batch"] = round(per_frame.pop("refine_batch") - inside, 3)
    if "device" in timer.seconds:
        per_frame["device"] = round(inside, 3)
    host_ms = per_frame["host_in_refine_batch"] + per_frame.get("tracking", 0.0) + per_frame.get("mel", 0.0)
    tracking = getattr(stats, "tracking", None)
    return {
        "speech_seconds": seconds, "frames": count, "refined": stats.refined, "seconds": round(elapsed, 3),
        "frames_per_second": round(count / elapsed, 1), "batch_size": refiner.batch_size,
        "network": "stand-in (returns its input)" if stand_in else "wav2lip",
        "host_cpu_ms_per_frame": round(1000 * cpu / count, 3), "host_work_ms_per_frame": round(host_ms, 3),
        "ms_per_frame": per_frame,
        "detector_calls": len(detector_calls), "detector_calls_per_frame": round(len(detector_calls) / count, 3),
        "detection_hit_rate": tracking.hit_rate if tracking is not None else None,
        "drift_frames": tracking.drift_frames if tracking is not None else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    parser.add_argument("--frames", type=int, default=4096, help="frames timed per batch size")
    parser.add_argument("--models-dir", type=Path, help="MODELS_DIR with real weights (default: random)")
    parser.add_argument("--skip-end-to-end", action="store_true")
    parser.add_argument("--seconds", type=float, default=10.0, help="speech the whole refiner is timed over")
    parser.add_argument("--stand-in-network", action="store_true",
                        help="time the whole refiner with a network that does no work (the host's share)")
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
        "refiner_frames_per_second": None, "end_to_end": None,
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
            result["end_to_end"] = end_to_end(models_dir, args.device, seconds=args.seconds,
                                              stand_in=args.stand_in_network)
            result["refiner_frames_per_second"] = result["end_to_end"]["frames_per_second"]
        except ImportError as exc:  # mediapipe / cv2 / PyAV absent on a bare GPU machine
            result["end_to_end"] = {"skipped": f"needs the service's dependencies: {exc}"}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
