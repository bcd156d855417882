"""Clips for the quality tests, made by the service's own parts (Piper + meshwarp + our encoder)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.config import load_settings
from runtime.device import DeviceChoice
from runtime.media.audio import Speech, frame_count, pad_to_frames
from runtime.media.encode import encode_mp4
from runtime.media.lipsync import read_audio, read_video

CPU = DeviceChoice("cpu", "tests", True)


def speak(text: str, fps: int = 25) -> Speech:
    from runtime.tts.piper_engine import PiperEngine

    return pad_to_frames(PiperEngine.load(load_settings(), CPU).synthesize(text), fps)


def meshwarp_frames(portrait: np.ndarray, speech: Speech, fps: int = 25) -> list[np.ndarray]:
    from runtime.models.meshwarp_model import MeshWarpBackend

    return list(MeshWarpBackend.load(load_settings(), CPU).animate(portrait, speech, fps, frame_count(speech.duration, fps)))


def write_clip(frames: list[np.ndarray], speech: Speech, fps: int, path: Path) -> Path:
    encode_mp4(iter(frames), speech, fps, path, expected_frames=len(frames))
    return path


def decoded(path: Path) -> tuple[list[np.ndarray], Speech, float]:
    """Frames, speech and fps of an mp4."""
    frames, fps = read_video(path)
    samples, rate, _ = read_audio(path)
    return frames, Speech(samples, rate), fps


def shifted(frames: list[np.ndarray], by: int) -> list[np.ndarray]:
    """The same frames `by` frames later (the first repeated): lips lag the sound by `by` frames."""
    return [frames[0]] * by + frames[: len(frames) - by]
