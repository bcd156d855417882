"""Portrait images: decoding with limits checked before any pixel is decoded."""
from __future__ import annotations

import contextlib
import io
import math
import threading
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageTooLargeError, InvalidImageError


# Images above this many pixels are decoded one at a time (PortraitDecoder): a 40-megapixel PNG
# needs ~120 MB at full size before it can be reduced, and four at once would need half a gigabyte.
LARGE_IMAGE_PIXELS = 4_000_000
_DEEP_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}
_EXIF_ORIENTATION = 0x0112
_ORIENTATION_TRANSPOSE = {
    2: [Image.Transpose.FLIP_LEFT_RIGHT], 3: [Image.Transpose.ROTATE_180], 4: [Image.Transpose.FLIP_TOP_BOTTOM],
    5: [Image.Transpose.TRANSPOSE], 6: [Image.Transpose.ROTATE_270], 7: [Image.Transpose.TRANSVERSE],
    8: [Image.Transpose.ROTATE_90],
}


class PortraitDecoder:
    """Decodes portraits within the request limits, decoding at most one large image at a time."""

    def __init__(self, *, max_bytes: int, max_pixels: int, max_output_side: int):
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.max_output_side = max_output_side
        self._large_image_lock = threading.Lock()

    def decode(self, data: bytes) -> np.ndarray:
        return decode_portrait(data, max_bytes=self.max_bytes, max_pixels=self.max_pixels,
                               max_output_side=self.max_output_side, large_image_lock=self._large_image_lock)


def decode_portrait(data: bytes, *, max_bytes: int, max_pixels: int, max_output_side: int,
                    large_image_lock: Optional[threading.Lock] = None) -> np.ndarray:
    """Image file bytes -> (H, W, 3) RGB uint8, upright (EXIF), at most max_output_side on its longer
    side, with even sides (H.264 needs them). Greyscale and alpha images become plain RGB; 16-bit and
    float images are scaled to 8 bits, not clipped.

    Never more pixels are decoded than needed: a JPEG is decoded at a reduced DCT scale (draft mode),
    other formats are box-reduced by an integer factor right after decoding, before any conversion.
    Images over LARGE_IMAGE_PIXELS take `large_image_lock` (when given) for their decoding."""
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"image is {len(data)} bytes; the limit is {max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # reads the header only
            width, height = image.size
            if width * height > max_pixels:
                raise ImageTooLargeError(f"image is {width}x{height} pixels; the limit is {max_pixels} pixels")
            if min(width, height) < 32:
                raise InvalidImageError(f"image is {width}x{height} pixels; at least 32x32 is needed")
            lock = large_image_lock if width * height > LARGE_IMAGE_PIXELS else None
            with lock if lock is not None else contextlib.nullcontext():
                image = _decode_reduced(image, max_output_side)
    except (ImageTooLargeError, InvalidImageError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # PIL's own pixel guard
        raise ImageTooLargeError("image has too many pixels") from None
    except UnidentifiedImageError:
        raise InvalidImageError("image could not be read as a picture (PNG, JPEG, WebP...)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated or corrupt files
        raise InvalidImageError(f"image is damaged ({type(exc).__name__})") from None
    if image.mode in _DEEP_MODES:
        image = _to_8_bit(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        image = background
    image = image.convert("RGB")
    scale = min(1.0, max_output_side / max(image.size))
    if scale < 1.0:
        image = image.resize((max(2, round(image.width * scale)), max(2, round(image.height * scale))), Image.LANCZOS)
    pixels = np.asarray(image, dtype=np.uint8)
    return np.ascontiguousarray(pixels[: pixels.shape[0] // 2 * 2, : pixels.shape[1] // 2 * 2])


def _decode_reduced(image: Image.Image, max_output_side: int) -> Image.Image:
    """Decode `image` (opened, not loaded) at no more than about twice max_output_side on its longer
    side, then turn it upright. Resampling to the exact size is left to the caller (Lanczos)."""
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    longer = max(image.size)
    if image.format == "JPEG" and longer > max_output_side:
        # draft picks the smallest DCT scale (1/2, 1/4, 1/8) that keeps at least the requested size
        scale = max_output_side / longer
        image.draft(image.mode if image.mode in ("RGB", "L") else None,
                    (math.ceil(image.width * scale), math.ceil(image.height * scale)))
    image.load()
    if image.mode.startswith("I;16"):  # reduce() knows 32-bit "I", not the 16-bit modes; values unchanged
        image = image.convert("I")
    factor = max(image.size) // max_output_side
    if factor >= 2 and image.mode not in ("P", "1"):  # reduce keeps colour; palettes are resized later
        image = image.reduce(factor)
    for transpose in _ORIENTATION_TRANSPOSE.get(orientation, []):
        image = image.transpose(transpose)
    return image


def _to_8_bit(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float greyscale -> "L", scaled to the format's range (16-bit data:
    /257), or to the data's own range when the values exceed 16 bits or are floats."""
    values = np.asarray(image, dtype=np.float32)
    if image.mode.startswith("I;16") or (image.mode == "I" and values.size and values.max() <= 65535 and values.min() >= 0):
        scaled = values / 257.0
    else:
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def load_portrait_file(path: Path, max_output_side: int = 1024) -> np.ndarray:
    data = path.read_bytes()
    return decode_portrait(data, max_bytes=len(data), max_pixels=10**9, max_output_side=max_output_side)
