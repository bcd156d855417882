"""The avatar backend interface: load once, then portrait + speech -> frames; and the lip refiner's,
which runs after any backend."""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from threading import Lock
from typing import (TYPE_CHECKING, Any, Callable, ClassVar, Generic, Iterable, Iterator, Mapping, Optional, Protocol,
                    Sequence, TypeVar)

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import BackendUnavailable  # noqa: F401  (re-exported for backends)
from ..errors import LipRefinerUnavailableError, UserInputError
from ..media.audio import Speech  # noqa: F401  (re-exported for backends)
from ..media.speech_motion import FaceMotion

if TYPE_CHECKING:
    from ..config import Settings
    from ..device import DeviceChoice


@dataclass(frozen=True)
class AnimationOptions:
    """Per-request knobs every backend honours.

    still: keep the head still (no sway or nods).
    expression_scale: multiplies the speech-driven expression (1.0 = as predicted).
    """

    still: bool = False
    expression_scale: float = 1.0


class BackendOptions(BaseModel):
    """Per-request knobs of one backend. A backend with knobs subclasses this and names the subclass
    in `AvatarBackend.options_model`; the HTTP layer passes them through as a plain dict."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class AvatarSession(ABC):
    """One clip or conversation on one prepared portrait, rendered chunk by chunk.

    The caller computes the motion of a speech stream incrementally (media.speech_motion.SpeechMotion)
    and hands it over in consecutive pieces; whatever must continue across pieces (the portrait's
    preparation, pose and expression state) lives here. Not thread-safe: one caller at a time."""

    unit_frames: int = 8  # frames per render() call that use the device well (a batch)

    @abstractmethod
    def render(self, motion: FaceMotion, speech: Speech) -> Iterator[np.ndarray]:
        """motion.n_frames frames (H, W, 3) RGB uint8 for frames motion.first_frame.. of the stream.

        speech: the stream's samples spanning exactly those frames (for backends driven by audio)."""


class BatchRenderer(ABC):
    """A device's frame renderer for frames of many sessions at once (the render scheduler calls it).

    Each item (runtime.scheduling.WorkItem) carries one frame's driving payload, planned by a
    BatchedSession, and that session's prepared portrait; frames of different portraits share a batch."""

    batch_size: int  # frames per batch (the engine's compiled shape)

    @abstractmethod
    def estimated_frames_per_second(self) -> float:
        """Frames per second at full batches before any was measured (the admission's starting capacity)."""

    @abstractmethod
    def __call__(self, items: Sequence[Any]) -> list[np.ndarray]:
        """One full-portrait frame (H, W, 3) RGB uint8 per item, in order; at most batch_size items."""


def portraits_of(items: Sequence[Any]) -> tuple[list[Any], list[int]]:
    """A mixed batch's distinct prepared portraits (by identity, in first-seen order) and, per
    item, the index of its own: what the engines' mixed-batch renders take."""
    portraits: list[Any] = []
    position: dict[int, int] = {}
    index = []
    for item in items:
        key = id(item.portrait)
        if key not in position:
            position[key] = len(portraits)
            portraits.append(item.portrait)
        index.append(position[key])
    return portraits, index


class BatchedSession(AvatarSession):
    """A session whose frames the device's render scheduler renders, in batches shared with other
    sessions: it plans each frame's driving payload (carrying its state across pieces, as render()
    does) and names its prepared portrait. Planning needs no device lock."""

    portrait: Any  # the prepared portrait the batch renderer reads
    renderer: BatchRenderer

    @abstractmethod
    def plan(self, motion: FaceMotion, speech: Speech) -> Sequence[Any]:
        """One driving payload per frame of `motion` (motion.n_frames of them), in order."""

    def render(self, motion: FaceMotion, speech: Speech) -> Iterator[np.ndarray]:
        """The session's frames rendered alone, batch by batch (no other session shares them)."""
        from ..scheduling import WorkItem

        payloads = self.plan(motion, speech)
        for start in range(0, len(payloads), self.renderer.batch_size):
            chunk = payloads[start:start + self.renderer.batch_size]
            yield from self.renderer([WorkItem(payload, self.portrait, 0.0) for payload in chunk])


class AvatarBackend(ABC):
    """A talking-head animator. Loads its models once; `animate` is called once per request.

    Subclasses set `name` (the public backend name), `display_name` (for logs), and where they
    need downloaded weights, `setup_script` and `weights_present`."""

    name: ClassVar[str]
    display_name: ClassVar[str]
    options_model: ClassVar[type[BackendOptions]] = BackendOptions
    setup_script: ClassVar[Optional[str]] = None  # downloads the weights, e.g. scripts/setup_sadtalker.sh

    @classmethod
    def weights_present(cls, settings: "Settings") -> bool:
        """Whether the backend's weights are on disk, checked without importing torch or loading anything."""
        return True

    @classmethod
    def parse_options(cls, options: Mapping[str, Any], seed_options: Mapping[str, Any] = {}) -> BackendOptions:  # noqa: B006 (read only)
        """Validate a request's backend options against this backend's schema; UserInputError if bad.

        seed_options: knobs the seed's body carried at its top level (pose_style, size); applied where
        this backend takes them and ignored elsewhere, as the seed did. `options` are strict."""
        fields = cls.options_model.model_fields
        merged = {**{key: value for key, value in seed_options.items() if key in fields}, **options}
        try:
            return cls.options_model.model_validate(merged)
        except ValidationError as exc:
            takes = ", ".join(fields) or "none"
            problems = "; ".join(f"{'.'.join(str(part) for part in error['loc']) or 'backend_options'}: {error['msg']}"
                                 for error in exc.errors())
            raise UserInputError(f"backend_options for {cls.name} (it takes: {takes}): {problems}",
                                 error="invalid_request") from exc

    @classmethod
    @abstractmethod
    def load(cls, settings: "Settings", device: "DeviceChoice") -> "AvatarBackend":
        """Load models onto the device; raise BackendUnavailable naming what is missing."""

    @abstractmethod
    def animate(self, portrait: np.ndarray, speech: Speech, fps: int, frames: int,
                options: AnimationOptions = AnimationOptions(),  # noqa: B008 (frozen)
                backend_options: Optional[BackendOptions] = None) -> Iterator[np.ndarray]:
        """Frames for the clip: portrait (H, W, 3) RGB uint8 in, `frames` frames (H, W, 3) RGB uint8
        out, lazily; `frames` is frame_count(speech.duration, fps), computed once by the caller.
        `backend_options` is what `parse_options` returned (None: the backend's defaults). Raises NoFaceError before the first frame
        if needed. Not thread-safe: the caller runs one clip at a time (GenerationService holds its
        device lock from this call until the frames are consumed or closed)."""

    @abstractmethod
    def start_session(self, portrait: np.ndarray, fps: int,
                      options: AnimationOptions = AnimationOptions(),  # noqa: B008 (frozen)
                      backend_options: Optional[BackendOptions] = None) -> AvatarSession:
        """Prepare the portrait (H, W, 3) RGB uint8 (cached by its hash) for chunk-by-chunk rendering.
        `backend_options` as for animate. Raises NoFaceError (or another UserInputError) now, before any frame."""

    def describe(self) -> dict:
        """Backend-specific detail for /health."""
        return {}

    @property
    def batch_renderer(self) -> Optional[BatchRenderer]:
        """The renderer of mixed batches when this backend's sessions are BatchedSessions (one
        render scheduler per device runs it); None: sessions render in the caller's thread."""
        return None

    # Registered avatars (runtime/avatars.py) keep a backend's per-portrait work. A backend that
    # declares `prepared_portrait_type` (a dataclass of arrays and numbers) has it stored on disk too.
    prepared_portrait_type: ClassVar[Optional[type]] = None

    def prepare(self, portrait: np.ndarray) -> object:
        """Work that depends only on the portrait (H, W, 3) RGB uint8, done now and cached (raises
        NoFaceError). Default: nothing to prepare ahead of a request."""
        return None

    def adopt_prepared(self, portrait: np.ndarray, prepared: object) -> None:
        """Put a preparation made earlier (possibly read from disk) in this backend's cache."""

    @property
    def preparations(self) -> int:
        """Per-portrait preparations computed since load (cache hits not counted)."""
        return 0


def image_key(image: np.ndarray) -> str:
    """Content hash of an image, for caches of portrait-only work."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(image.shape).encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


T = TypeVar("T")


class PortraitCache(Generic[T]):
    """A small LRU of work that depends only on the portrait, keyed by image hash; thread-safe."""

    def __init__(self, capacity: int = 16):
        self.capacity = capacity
        self._items: OrderedDict[str, T] = OrderedDict()
        self._lock = Lock()
        self.computed = 0  # misses: preparations actually done

    def get_or_compute(self, image: np.ndarray, compute: Callable[[np.ndarray], T], key_suffix: str = "") -> T:
        """compute(image), cached by the image's hash plus key_suffix (what else the work depends on)."""
        key = image_key(image) + key_suffix
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = compute(image)  # outside the lock: preparation can be slow
        self.computed += 1
        self._store(key, value)
        return value

    def put(self, image: np.ndarray, value: T, key_suffix: str = "") -> None:
        """Store work done elsewhere (a registered avatar's) for `image`, keyed as get_or_compute keys it."""
        self._store(image_key(image) + key_suffix, value)

    def _store(self, key: str, value: T) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class RefinerSession(Protocol):
    """One stream's speech and frames arriving piece by piece; frames come out refined, in order,
    once the speech they need has arrived (finish() gives the rest)."""

    def add_speech(self, speech: Speech) -> None: ...

    def add_frames(self, frames: list[np.ndarray]) -> list[np.ndarray]: ...

    def finish(self) -> list[np.ndarray]: ...


class FrameRefiner(Protocol):
    """A post-processor of any backend's frames (the lip refiner): frames and their speech in,
    as many frames out, lazily; or piece by piece through a session (streams)."""

    def refine(self, frames: Iterable[np.ndarray], speech: Speech, fps: float) -> Iterator[np.ndarray]: ...

    def session(self, fps: float) -> RefinerSession: ...

    def describe(self) -> dict: ...


@dataclass
class LipRefinerSelection:
    """What LIP_REFINER asked for, the refiner if it loaded, and why not."""

    requested: str = "none"
    refiner: Optional[FrameRefiner] = None
    reason: str = "LIP_REFINER=none"

    @property
    def active(self) -> bool:
        return self.refiner is not None

    def as_dict(self) -> dict:
        """The refiner's part of /health."""
        detail = {"requested": self.requested, "active": self.active, "reason": None if self.active else self.reason}
        if self.refiner is not None:
            detail.update(self.refiner.describe())
        return detail

    def wants(self, lip_refine: Optional[bool]) -> bool:
        """Whether a request runs the refiner: its `lip_refine` flag, else LIP_REFINER. Asking for it
        while it is off is the client's error (409, naming why it is off)."""
        if lip_refine is None:
            return self.active
        if lip_refine and not self.active:
            raise LipRefinerUnavailableError(f"lip_refine was requested but the lip refiner is off: {self.reason}")
        return bool(lip_refine)

    def apply(self, frames: Iterable[np.ndarray], speech: Speech, fps: int,
              lip_refine: Optional[bool]) -> Iterator[np.ndarray]:
        """The frames, refined when the request wants it, lazily (a stream stays a stream)."""
        if not self.wants(lip_refine):
            return iter(frames)
        return self.refiner.refine(frames, speech, fps)
