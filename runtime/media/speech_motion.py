"""Speech -> per-frame face motion targets, shared by every backend; whole clips or a stream.

From the waveform alone: how open and how rounded the lips are, how loud the frame is, when
the eyes blink and how the head sways and nods. Values are smooth (zero-phase filtered, so the
mouth neither jitters nor lags the sound) and deterministic for a given waveform.

`SpeechMotion` computes them incrementally: speech is pushed as it is synthesized, and the
motion of each frame comes out once LOOKAHEAD_FRAMES of speech beyond it are known, carrying
the filters, blinks and head sway across pushes, so a chunked stream has no seam. `face_motion`
is the same computation run over a whole clip.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d, maximum_filter1d, uniform_filter1d

from .audio import Speech, frame_count

# Bands (Hz) for the mouth-shape cues.
_VOICED_BAND = (80.0, 2500.0)  # vowels and voiced consonants carry most energy here
_FRICATIVE_BAND = (3500.0, 8000.0)  # s, sh, f, t bursts: mouth nearly closed, teeth showing
_OPEN_VOWEL_BAND = (550.0, 1100.0)  # a high first formant means a wide jaw (a, ae)
_LOW_BAND = (80.0, 550.0)
_ROUND_BAND = (80.0, 1000.0)  # rounded vowels (o, u) keep both formants below ~1 kHz
_LOUDNESS_RANGE_DB = 40.0  # frames this far below the loudest count as silence
_REFERENCE_PERCENTILE = 98.0  # "the loudest": this percentile of the frames' levels
# Frames below this level (digital silence, an idle avatar) do not move the loudness reference.
_REFERENCE_FLOOR_DB = -50.0
_DEFAULT_REFERENCE_DB = 18.0  # Piper's speech measures 17.6-18.7 dB here; used until speech is heard
_HISTOGRAM_STEP_DB = 0.05
_HISTOGRAM_TOP_DB = 80.0
_MOUTH_SIGMA = 0.8  # smoothing, in frames at 25 fps
_ROUND_SIGMA = 1.2
_NOD_SIGMA_SECONDS = 0.12
_NOD_TRUNCATE = 2.0  # the nod's smoothing reaches two sigmas ahead: it bounds the stream's lookahead
SPEECH_HOLD_S = 0.25  # a silence shorter than twice this is a breath inside speech, not a pause
_VOICED_LOUDNESS = 0.25  # loudness (0..1) above which a frame is speech
_SPEAKING_EASE_SECONDS = 0.08  # the speaking envelope eases in and out over about two frames at 25 fps
_SPEAKING_TRUNCATE = 2.0  # ... reaching two sigmas ahead, which bounds the stream's lookahead
_SEED_SAMPLES = 4096  # the random parts are seeded by the first samples of the speech


@dataclass(frozen=True)
class MouthTrack:
    """Per-frame mouth targets; each array (n_frames,) float32 in [0, 1]."""

    loudness: np.ndarray
    lip_open: np.ndarray  # 0 closed .. 1 wide open
    lip_round: np.ndarray  # 0 neutral/spread .. 1 rounded (o, u)


@dataclass(frozen=True)
class FaceMotion:
    """Everything a backend needs to animate frames; arrays (n_frames,) float32.

    first_frame: index of the first of these frames in the clip or stream they belong to."""

    fps: int
    mouth: MouthTrack
    blink: np.ndarray  # 0 eyes open .. 1 closed
    head_pitch: np.ndarray  # degrees, positive = chin down (a nod)
    head_yaw: np.ndarray  # degrees, positive = turns to the viewer's right
    head_roll: np.ndarray  # degrees, positive = clockwise in the image
    speaking: np.ndarray  # 0 in pauses .. 1 while speaking (frames within SPEECH_HOLD_S of a voiced one)
    first_frame: int = 0

    @property
    def n_frames(self) -> int:
        return len(self.blink)

    def slice(self, start: int, stop: int) -> "FaceMotion":
        """Frames [start, stop) of this piece (indices relative to it)."""
        cut = slice(start, stop)
        mouth = MouthTrack(self.mouth.loudness[cut], self.mouth.lip_open[cut], self.mouth.lip_round[cut])
        return FaceMotion(self.fps, mouth, self.blink[cut], self.head_pitch[cut], self.head_yaw[cut],
                          self.head_roll[cut], self.speaking[cut], self.first_frame + min(start, self.n_frames))

    @staticmethod
    def concatenate(pieces: list["FaceMotion"]) -> "FaceMotion":
        """Consecutive pieces of one stream as one (at least one piece)."""
        def cat(get) -> np.ndarray:
            return np.concatenate([get(piece) for piece in pieces]).astype(np.float32)

        mouth = MouthTrack(cat(lambda p: p.mouth.loudness), cat(lambda p: p.mouth.lip_open),
                           cat(lambda p: p.mouth.lip_round))
        return FaceMotion(pieces[0].fps, mouth, cat(lambda p: p.blink), cat(lambda p: p.head_pitch),
                          cat(lambda p: p.head_yaw), cat(lambda p: p.head_roll), cat(lambda p: p.speaking),
                          pieces[0].first_frame)


def _gaussian_radius(sigma: float, truncate: float = 4.0) -> int:
    return int(truncate * sigma + 0.5)  # as scipy's gaussian_filter1d (default truncate=4)


def lookahead_frames(fps: int) -> int:
    """Frames of speech beyond a frame that its motion depends on."""
    mouth = _gaussian_radius(_MOUTH_SIGMA * fps / 25.0)
    rounding = _gaussian_radius(_ROUND_SIGMA * fps / 25.0)
    nod = mouth + _gaussian_radius(_NOD_SIGMA_SECONDS * fps, _NOD_TRUNCATE)
    speaking = mouth + _hold_frames(fps) // 2 + _gaussian_radius(_SPEAKING_EASE_SECONDS * fps, _SPEAKING_TRUNCATE)
    return max(rounding, nod, speaking)


def _hold_frames(fps: int) -> int:
    return max(1, int(round(2 * SPEECH_HOLD_S * fps))) | 1


def _context_frames(fps: int) -> int:
    """Frames before a frame that its motion depends on (the nod compares with the last second)."""
    return lookahead_frames(fps) + max(1, fps)


@dataclass
class _FrameFeatures:
    """Per-frame spectral cues before the loudness reference is applied; arrays (n,) float64."""

    level_db: np.ndarray
    openness_cue: np.ndarray
    fricative_share: np.ndarray
    round_share: np.ndarray

    def __getitem__(self, cut: slice) -> "_FrameFeatures":
        return _FrameFeatures(self.level_db[cut], self.openness_cue[cut], self.fricative_share[cut],
                              self.round_share[cut])

    @staticmethod
    def concatenate(a: "_FrameFeatures", b: "_FrameFeatures") -> "_FrameFeatures":
        return _FrameFeatures(*(np.concatenate([x, y]) for x, y in
                                zip((a.level_db, a.openness_cue, a.fricative_share, a.round_share),
                                    (b.level_db, b.openness_cue, b.fricative_share, b.round_share))))


def _window_length(sample_rate: int, fps: int) -> int:
    return int(2 * (sample_rate / fps)) // 2 * 2


def _frame_features(samples: np.ndarray, offset: int, sample_rate: int, fps: int, frames: np.ndarray) -> _FrameFeatures:
    """Cues of the given frames from Hann windows two frames long centred on each frame.

    samples: float32 (n,) speech starting at sample `offset` of the stream (zeros outside it)."""
    hop = sample_rate / fps
    window_len = _window_length(sample_rate, fps)
    half = window_len // 2
    centres = (frames * hop + hop / 2).astype(np.int64) - offset
    index = centres[:, None] + np.arange(-half, half)[None, :]
    inside = (index >= 0) & (index < len(samples))
    windows = np.where(inside, samples[np.clip(index, 0, max(len(samples) - 1, 0))] if len(samples) else 0.0, 0.0)
    windows = (windows * np.hanning(window_len)).astype(np.float32)
    power = np.abs(np.fft.rfft(windows, axis=1)) ** 2
    freqs = np.fft.rfftfreq(window_len, 1.0 / sample_rate)

    def band(low_high: tuple[float, float]) -> np.ndarray:
        low, high = low_high
        return power[:, (freqs >= low) & (freqs < high)].sum(axis=1)

    eps = 1e-10
    total = power.sum(axis=1) + eps
    voiced, fricative = band(_VOICED_BAND), band(_FRICATIVE_BAND)
    open_vowel = band(_OPEN_VOWEL_BAND)
    return _FrameFeatures(
        level_db=10 * np.log10(total / power.shape[1] + eps),
        openness_cue=open_vowel / (open_vowel + band(_LOW_BAND) + eps),
        fricative_share=fricative / (voiced + fricative + eps),
        round_share=band(_ROUND_BAND) / (voiced + eps),
    )


def _smooth(values: np.ndarray, fps: int, sigma_at_25fps: float) -> np.ndarray:
    return gaussian_filter1d(values, sigma=sigma_at_25fps * fps / 25.0, mode="nearest")


def _mouth(features: _FrameFeatures, reference_db: float, fps: int) -> MouthTrack:
    """Loudness and mouth shape of consecutive frames (filters see only these frames)."""
    loudness = np.clip((features.level_db - (reference_db - _LOUDNESS_RANGE_DB)) / _LOUDNESS_RANGE_DB, 0, 1)
    # Loudness drives the jaw; open vowels open it further, fricatives hold it near closed.
    lip_open = loudness ** 1.3 * (0.55 + 0.6 * features.openness_cue) * (1.0 - 0.6 * features.fricative_share)
    # Rounding needs voicing with energy packed below 1 kHz, and fades with openness (o vs a).
    lip_round = (np.clip((features.round_share - 0.72) / 0.2, 0, 1) * np.clip(loudness * 1.5, 0, 1)
                 * (1 - features.fricative_share))
    return MouthTrack(
        loudness=_smooth(loudness, fps, _MOUTH_SIGMA).astype(np.float32),
        lip_open=np.clip(_smooth(lip_open, fps, _MOUTH_SIGMA), 0, 1).astype(np.float32),
        lip_round=np.clip(_smooth(lip_round, fps, _ROUND_SIGMA), 0, 1).astype(np.float32),
    )


def _nod(loudness: np.ndarray, fps: int) -> np.ndarray:
    """Degrees of chin-down where the voice rises above its level of the last second."""
    window = max(1, fps)
    recent = uniform_filter1d(loudness, size=window, mode="nearest", origin=(window - 1) // 2)  # trailing mean
    rise = np.clip(loudness - recent, 0, None)
    return 6.0 * gaussian_filter1d(rise, sigma=_NOD_SIGMA_SECONDS * fps, mode="nearest", truncate=_NOD_TRUNCATE)


def speaking_envelope(loudness: np.ndarray, fps: int) -> np.ndarray:
    """(n,) 0 in pauses .. 1 while speaking: frames within SPEECH_HOLD_S of a voiced one, eased
    over about two frames at 25 fps. loudness: (n,) in [0, 1]."""
    voiced = (loudness > _VOICED_LOUDNESS).astype(np.float32)
    held = maximum_filter1d(voiced, size=_hold_frames(fps), mode="nearest")
    return np.clip(gaussian_filter1d(held, sigma=_SPEAKING_EASE_SECONDS * fps, mode="nearest",
                                     truncate=_SPEAKING_TRUNCATE), 0.0, 1.0)


class _LevelHistogram:
    """A bounded-memory percentile of frame levels (dB), to _HISTOGRAM_STEP_DB."""

    def __init__(self):
        self._counts = np.zeros(int((_HISTOGRAM_TOP_DB - _REFERENCE_FLOOR_DB) / _HISTOGRAM_STEP_DB) + 1, np.int64)

    def add(self, level_db: np.ndarray) -> None:
        loud = level_db[level_db > _REFERENCE_FLOOR_DB]
        bins = np.clip(((loud - _REFERENCE_FLOOR_DB) / _HISTOGRAM_STEP_DB).astype(np.int64), 0, len(self._counts) - 1)
        np.add.at(self._counts, bins, 1)

    def percentile(self, q: float, default: float) -> float:
        total = int(self._counts.sum())
        if total == 0:
            return default
        rank = np.searchsorted(np.cumsum(self._counts), q / 100.0 * total)
        return _REFERENCE_FLOOR_DB + (min(int(rank), len(self._counts) - 1) + 0.5) * _HISTOGRAM_STEP_DB


class _Blinks:
    """Eyelid closure: a blink (0.1 s closing, 0.15 s opening) every 2-5 s, drawn as time advances."""

    def __init__(self, rng: np.random.Generator):
        self._rng = rng
        self._starts = [float(rng.uniform(0.6, 2.0))]

    def closure(self, times: np.ndarray) -> np.ndarray:
        """times: (n,) seconds, ascending, never before the previous call's first time."""
        if len(times) == 0:
            return np.zeros(0, np.float32)
        while self._starts[-1] < times[-1] + 1:
            self._starts.append(self._starts[-1] + float(self._rng.uniform(2.0, 5.0)))
        while len(self._starts) > 1 and self._starts[0] + 0.25 < times[0]:
            self._starts.pop(0)
        closure = np.zeros(len(times))
        for start in self._starts:
            closing = np.clip((times - start) / 0.1, 0, 1)
            opening = np.clip((times - start - 0.1) / 0.15, 0, 1)
            closure = np.maximum(closure, np.where(times < start + 0.1, closing, 1 - opening))
        return (np.sin(closure * np.pi / 2) ** 2).astype(np.float32)


class _Sway:
    """Idle head sway: slow sinusoids of a degree or two, easing in from the portrait's own pose."""

    def __init__(self, rng: np.random.Generator):
        self._phase = rng.uniform(0, 2 * np.pi, size=5)

    def angles(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(pitch, yaw, roll) degrees at times (n,) s, before nods and easing."""
        p = self._phase
        yaw = 1.8 * np.sin(2 * np.pi * 0.11 * times + p[0]) + 0.7 * np.sin(2 * np.pi * 0.29 * times + p[1])
        roll = 1.0 * np.sin(2 * np.pi * 0.08 * times + p[2])
        pitch = 0.8 * np.sin(2 * np.pi * 0.17 * times + p[3]) + 0.4 * np.sin(2 * np.pi * 0.37 * times + p[4])
        return pitch, yaw, roll


class SpeechMotion:
    """Face motion of a speech stream, computed as the speech arrives.

    push(samples) returns the motion of every frame now final (possibly none); finish() returns
    the rest, for frame_count(total seconds, fps) frames in all. Memory is bounded: only the
    speech and cues of the last few frames are kept. Not thread-safe."""

    def __init__(self, sample_rate: int, fps: int):
        self.sample_rate = sample_rate
        self.fps = fps
        self.lookahead = lookahead_frames(fps)
        self._context = _context_frames(fps)
        self._half = _window_length(sample_rate, fps) // 2
        self._samples = np.zeros(0, np.float32)  # the stream's samples from _offset on
        self._offset = 0
        self._received = 0  # samples pushed so far
        self._features: _FrameFeatures | None = None  # cues of frames _features_start ..
        self._features_start = 0
        self._analysed = 0  # frames whose cues are known
        self._emitted = 0  # frames returned so far
        self._levels = _LevelHistogram()
        self._seed_samples = np.zeros(0, np.float32)
        self._blinks: _Blinks | None = None
        self._sway: _Sway | None = None
        self._finished = False

    @property
    def emitted_frames(self) -> int:
        return self._emitted

    @property
    def received_seconds(self) -> float:
        return self._received / self.sample_rate

    @property
    def held(self) -> tuple[int, int]:
        """(samples, frames of cues) kept for frames still to come: bounded, however long the stream."""
        return len(self._samples), 0 if self._features is None else len(self._features.level_db)

    def push(self, samples: np.ndarray) -> FaceMotion:
        """samples: float32 (n,) mono at sample_rate, continuing the stream."""
        if self._finished:
            raise RuntimeError("push after finish")
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if len(self._seed_samples) < _SEED_SAMPLES:
            self._seed_samples = np.concatenate([self._seed_samples, samples[: _SEED_SAMPLES - len(self._seed_samples)]])
        self._samples = np.concatenate([self._samples, samples])
        self._received += len(samples)
        hop = self.sample_rate / self.fps
        # Frame i's window ends at its centre plus half a window.
        ready = int(np.floor((self._received - self._half - hop / 2) / hop)) + 1
        self._analyse(max(ready, self._analysed))
        return self._emit(self._analysed - self.lookahead, final=False)

    def finish(self) -> FaceMotion:
        """The motion of the remaining frames, up to frame_count(total seconds, fps)."""
        total = frame_count(self._received / self.sample_rate, self.fps)
        self._analyse(total)
        self._finished = True
        return self._emit(total, final=True)

    def _analyse(self, until: int) -> None:
        if until <= self._analysed:
            return
        frames = np.arange(self._analysed, until)
        features = _frame_features(self._samples, self._offset, self.sample_rate, self.fps, frames)
        self._levels.add(features.level_db)
        self._features = features if self._features is None else _FrameFeatures.concatenate(self._features, features)
        self._analysed = until

    def _emit(self, until: int, final: bool) -> FaceMotion:
        start = self._emitted
        until = max(until, start)
        if self._blinks is None and (until > start or final):
            seed = zlib.crc32(np.ascontiguousarray(self._seed_samples).tobytes())
            self._blinks = _Blinks(np.random.default_rng([seed, 0]))
            self._sway = _Sway(np.random.default_rng([seed, 1]))
        context_start = max(0, start - self._context)
        features = self._features[context_start - self._features_start:] if self._features is not None else None
        if until == start or features is None:
            empty = np.zeros(0, np.float32)
            return FaceMotion(self.fps, MouthTrack(empty, empty, empty), empty, empty, empty, empty, empty, start)
        reference = self._levels.percentile(_REFERENCE_PERCENTILE, _DEFAULT_REFERENCE_DB)
        mouth = _mouth(features, reference, self.fps)  # the context frames keep the filters seamless
        nod = _nod(mouth.loudness, self.fps)
        speaking = speaking_envelope(mouth.loudness, self.fps)
        keep = slice(start - context_start, until - context_start)
        times = np.arange(start, until) / self.fps
        pitch, yaw, roll = self._sway.angles(times)
        pitch = pitch + nod[keep]
        ease_in = np.clip(times / 0.4, 0, 1)  # the first frame keeps the portrait's own pose
        motion = FaceMotion(
            fps=self.fps,
            mouth=MouthTrack(mouth.loudness[keep], mouth.lip_open[keep], mouth.lip_round[keep]),
            blink=self._blinks.closure(times),
            head_pitch=(pitch * ease_in).astype(np.float32),
            head_yaw=(yaw * ease_in).astype(np.float32),
            head_roll=(roll * ease_in).astype(np.float32),
            speaking=speaking[keep].astype(np.float32),
            first_frame=start,
        )
        self._emitted = until
        self._forget(max(0, until - self._context))
        return motion

    def _forget(self, before_frame: int) -> None:
        """Drop cues and samples no future frame needs (frames before before_frame)."""
        if self._features is not None and before_frame > self._features_start:
            self._features = self._features[before_frame - self._features_start:]
            self._features_start = before_frame
        hop = self.sample_rate / self.fps
        first_needed = max(0, int(self._analysed * hop + hop / 2) - self._half - 1)
        if first_needed > self._offset:
            self._samples = self._samples[first_needed - self._offset:]
            self._offset = first_needed


def mouth_track(speech: Speech, fps: int) -> MouthTrack:
    """Loudness and mouth shape for each of frame_count(speech.duration, fps) frames."""
    return face_motion(speech, fps).mouth


def face_motion(speech: Speech, fps: int) -> FaceMotion:
    """All motion targets for a clip. Deterministic: the random parts are seeded by the waveform."""
    stream = SpeechMotion(speech.sample_rate, fps)
    first = stream.push(speech.samples)
    return FaceMotion.concatenate([first, stream.finish()])
