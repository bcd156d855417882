"""Registered avatars: a portrait decoded, checked and prepared once, then used by id.

On disk under DATA_DIR/avatars/<id>/: `portrait.png` (the decoded portrait), `meta.json`, and
`<backend>.npz` with the backend's per-portrait preparation when the backend declares it as a
dataclass of arrays and numbers (never a pickle). In memory: an LRU of portraits with their
preparation, handed to the backend before each use so that its own cache never has to redo it.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import threading
import time
import typing
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image

from .errors import UserInputError
from .media.portrait import PortraitDecoder
from .models.base import AvatarBackend, image_key

log = logging.getLogger(__name__)

_AVATAR_ID = re.compile(r"^[0-9a-f]{32}$")


class UnknownAvatarError(UserInputError):
    error = "unknown_avatar"
    status_code = 404


class AvatarLimitError(UserInputError):
    error = "too_many_avatars"
    status_code = 409


@dataclass(frozen=True)
class AvatarInfo:
    avatar_id: str
    width: int
    height: int
    created: float  # unix seconds
    prepared_for: tuple[str, ...]  # backends whose preparation is stored

    def as_dict(self) -> dict:
        return {"avatar_id": self.avatar_id, "width": self.width, "height": self.height,
                "created": self.created, "prepared_for": list(self.prepared_for)}


@dataclass
class Avatar:
    info: AvatarInfo
    portrait: np.ndarray  # (H, W, 3) RGB uint8
    prepared: Any  # the backend's preparation, or None when it declares none


class AvatarStore:
    """Thread-safe. `backend` is the loaded avatar backend whose preparation is kept."""

    def __init__(self, data_dir: Path, backend: AvatarBackend, decoder: PortraitDecoder,
                 cache_size: int, max_avatars: int):
        self.root = data_dir / "avatars"
        self.root.mkdir(parents=True, exist_ok=True)
        self.backend = backend
        self.decoder = decoder
        self.cache_size = cache_size
        self.max_avatars = max_avatars
        self._cache: OrderedDict[str, Avatar] = OrderedDict()
        self._lock = threading.Lock()
        for leftover in self.root.glob(".incoming-*"):  # a registration interrupted by a crash
            shutil.rmtree(leftover, ignore_errors=True)

    def _dir(self, avatar_id: str) -> Path:
        if not _AVATAR_ID.match(avatar_id):
            raise UnknownAvatarError(f"no avatar {avatar_id[:64]!r}; ids are 32 hex digits from POST /avatars")
        return self.root / avatar_id

    def register(self, image: bytes) -> tuple[AvatarInfo, bool]:
        """Decode, locate the face and prepare `image` for the backend; returns (info, created).
        The id is the decoded portrait's hash, so registering the same picture twice gives one avatar.
        Raises the same 4xx errors as /generate for a bad portrait."""
        portrait = self.decoder.decode(image)
        avatar_id = image_key(portrait)
        existing = self._dir(avatar_id)
        if (existing / "meta.json").is_file():
            return self.get(avatar_id).info, False
        if len(self.list()) >= self.max_avatars:
            raise AvatarLimitError(f"{self.max_avatars} avatars are registered (MAX_AVATARS); delete some first")
        prepared = self.backend.prepare(portrait)  # NoFaceError and friends surface here
        persisted = _persistable(self.backend, prepared)
        info = AvatarInfo(avatar_id, portrait.shape[1], portrait.shape[0], time.time(),
                          (self.backend.name,) if persisted else ())
        incoming = self.root / f".incoming-{avatar_id}-{threading.get_ident()}"
        incoming.mkdir(parents=True)
        try:
            Image.fromarray(portrait).save(incoming / "portrait.png")
            if persisted:
                self._write_prepared(incoming, prepared)
            (incoming / "meta.json").write_text(json.dumps(info.as_dict()))
            try:
                os.rename(incoming, existing)  # atomic: a reader sees all of an avatar or none
            except OSError:  # registered meanwhile by another request
                shutil.rmtree(incoming, ignore_errors=True)
        except BaseException:
            shutil.rmtree(incoming, ignore_errors=True)
            raise
        self._remember(Avatar(info, portrait, prepared))
        log.info("Registered avatar %s (%dx%d), prepared for %s", avatar_id, info.width, info.height,
                 self.backend.name)
        return info, True

    def get(self, avatar_id: str) -> Avatar:
        """The avatar, from memory or disk; its preparation is handed to the backend's cache."""
        with self._lock:
            avatar = self._cache.get(avatar_id)
            if avatar is not None:
                self._cache.move_to_end(avatar_id)
        if avatar is None:
            avatar = self._load(avatar_id)
            self._remember(avatar)
        if avatar.prepared is not None:
            self.backend.adopt_prepared(avatar.portrait, avatar.prepared)
        return avatar

    def _load(self, avatar_id: str) -> Avatar:
        directory = self._dir(avatar_id)
        try:
            meta = json.loads((directory / "meta.json").read_text())
            with Image.open(directory / "portrait.png") as image:
                portrait = np.asarray(image.convert("RGB"))
        except FileNotFoundError:
            raise UnknownAvatarError(f"no avatar {avatar_id}") from None
        prepared = self._read_prepared(directory, avatar_id, portrait)
        info = AvatarInfo(meta["avatar_id"], meta["width"], meta["height"], meta["created"],
                          tuple(meta.get("prepared_for", ())))
        return Avatar(info, portrait, prepared)

    def _write_prepared(self, directory: Path, prepared: Any) -> None:
        tmp = directory / f".{self.backend.name}.npz.tmp"
        with open(tmp, "wb") as out:
            np.savez_compressed(out, **_flatten(prepared))
        os.replace(tmp, directory / f"{self.backend.name}.npz")

    def _read_prepared(self, directory: Path, avatar_id: str, portrait: np.ndarray) -> Any:
        """The stored preparation; when there is none for this backend yet, or it was written by a
        version whose preparation had other fields, it is done again now and stored for next time."""
        prepared_type = self.backend.prepared_portrait_type
        if prepared_type is None:
            return None
        stored = directory / f"{self.backend.name}.npz"
        if stored.is_file():
            try:
                with np.load(stored, allow_pickle=False) as arrays:
                    prepared = _unflatten(prepared_type, dict(arrays))
                log.info("Avatar %s: %s preparation read from disk", avatar_id, self.backend.name)
                return prepared
            except (KeyError, ValueError, TypeError, OSError) as exc:
                log.warning("Avatar %s: the stored %s preparation does not fit this version (%s: %s); "
                            "preparing it again", avatar_id, self.backend.name, type(exc).__name__, exc)
        prepared = self.backend.prepare(portrait)
        if _persistable(self.backend, prepared):
            self._write_prepared(directory, prepared)
        return prepared

    def _remember(self, avatar: Avatar) -> None:
        with self._lock:
            self._cache[avatar.info.avatar_id] = avatar
            self._cache.move_to_end(avatar.info.avatar_id)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def list(self) -> list[AvatarInfo]:
        infos = []
        for meta in sorted(self.root.glob("*/meta.json")):
            try:
                data = json.loads(meta.read_text())
            except (OSError, ValueError):
                continue
            infos.append(AvatarInfo(data["avatar_id"], data["width"], data["height"], data["created"],
                                    tuple(data.get("prepared_for", ()))))
        return infos

    def delete(self, avatar_id: str) -> None:
        directory = self._dir(avatar_id)
        if not directory.is_dir():
            raise UnknownAvatarError(f"no avatar {avatar_id}")
        with self._lock:
            self._cache.pop(avatar_id, None)
        shutil.rmtree(directory, ignore_errors=True)
        log.info("Deleted avatar %s", avatar_id)


def _persistable(backend: AvatarBackend, prepared: Any) -> bool:
    return prepared is not None and backend.prepared_portrait_type is not None and isinstance(
        prepared, backend.prepared_portrait_type)


# A dataclass of arrays, numbers, tuples of those and nested such dataclasses <-> flat {name: array},
# so a preparation is stored as plain .npz (no pickle, nothing executable in DATA_DIR).
def _flatten(value: Any, prefix: str = "") -> dict[str, np.ndarray]:
    if dataclasses.is_dataclass(value):
        flat: dict[str, np.ndarray] = {}
        for field in dataclasses.fields(value):
            flat.update(_flatten(getattr(value, field.name), f"{prefix}{field.name}."))
        return flat
    if isinstance(value, tuple):
        flat = {f"{prefix}__len__": np.asarray(len(value))}
        for index, item in enumerate(value):
            flat.update(_flatten(item, f"{prefix}{index}."))
        return flat
    if isinstance(value, (np.ndarray, int, float, np.number, bool)):
        return {prefix.rstrip("."): np.asarray(value)}
    raise TypeError(f"cannot store {type(value).__name__} at {prefix.rstrip('.')!r} in an .npz")


def _unflatten(kind: Any, flat: dict[str, np.ndarray], prefix: str = "") -> Any:
    if dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        return kind(**{field.name: _unflatten(hints[field.name], flat, f"{prefix}{field.name}.")
                       for field in dataclasses.fields(kind)})
    origin = typing.get_origin(kind)
    if origin is tuple:
        args = typing.get_args(kind)
        length = int(flat[f"{prefix}__len__"])
        item_types = [args[0]] * length if len(args) == 2 and args[1] is Ellipsis else list(args)
        return tuple(_unflatten(item_types[i], flat, f"{prefix}{i}.") for i in range(length))
    array = flat[prefix.rstrip(".")]
    if kind in (int, float, bool):
        return kind(array)
    return array
