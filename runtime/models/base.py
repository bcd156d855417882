"""The avatar backend interface: load once, then portrait + speech -> frames."""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from threading import Lock
from typing import TYPE_CHECKING, Callable, ClassVar, Generic, Iterator, Optional, TypeVar

import numpy as np

from ..errors import BackendUnavailable  # noqa: F401  (re-exported for backends)
from ..media.audio import Speech  # noqa: F401  (re-exported for backends)

if TYPE_CHECKING:
    from ..config import Settings
    from ..device import DeviceChoice


@dataclass(frozen=True)
class AnimationOptions:
    """Per-request knobs. Backends use those that apply to them and ignore the rest.

    still: keep the head still (no sway or nods).
    expression_scale: multiplies the speech-driven expression (1.0 = as predicted).
    pose_style: SadTalker's pose style index (0-45).
    size: SadTalker's render size, 256 or 512 (None = the backend's default).
    face: which face of a group photo talks: an index by size ("0" = the largest, the default) or a
        point "x,y" in the portrait's pixels (meshwarp).
    """

    still: bool = False
    expression_scale: float = 1.0
    pose_style: int = 0
    size: Optional[int] = None
    face: Optional[str] = None


class AvatarBackend(ABC):
    """A talking-head animator. Loads its models once; `animate` is called once per request.

    Subclasses set `name` (the public backend name) and `display_name` (for logs)."""

    name: ClassVar[str]
    display_name: ClassVar[str]

    @classmethod
    @abstractmethod
    def load(cls, settings: "Settings", device: "DeviceChoice") -> "AvatarBackend":
        """Load models onto the device; raise BackendUnavailable naming what is missing."""

    @abstractmethod
    def animate(
        self, portrait: np.ndarray, speech: Speech, fps: int, options: AnimationOptions = AnimationOptions()
    ) -> Iterator[np.ndarray]:
        """Frames for the clip: portrait (H, W, 3) RGB uint8 in, frame_count(speech.duration, fps)
        frames (H, W, 3) RGB uint8 out, lazily. Raises NoFaceError before the first frame if needed.
        Not thread-safe: the caller runs one clip at a time (GenerationService holds its device lock
        from this call until the frames are consumed or closed)."""

    def describe(self) -> dict:
        """Backend-specific detail for /health."""
        return {}


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

    def get_or_compute(self, image: np.ndarray, compute: Callable[[np.ndarray], T], key_suffix: str = "") -> T:
        """compute(image), cached by the image's hash plus key_suffix (what else the work depends on)."""
        key = image_key(image) + key_suffix
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = compute(image)  # outside the lock: preparation can be slow
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)
