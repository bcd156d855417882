"""Portrait images: decoding with limits checked before any pixel is decoded."""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageTooLargeError, InvalidImageError


def decode_portrait(data: bytes, *, max_bytes: int, max_pixels: int, max_output_side: int) -> np.ndarray:
    """Image file bytes -> (H, W, 3) RGB uint8, upright (EXIF), at most max_output_side on its longer
    side, with even sides (H.264 needs them). Greyscale and alpha images become plain RGB."""
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
            image = ImageOps.exif_transpose(image)
            image.load()
    except (ImageTooLargeError, InvalidImageError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # PIL's own pixel guard
        raise ImageTooLargeError(f"image has too many pixels: {exc}") from exc
    except UnidentifiedImageError as exc:
        # Pillow's message names the file object (a repr with its address): not the client's business.
        raise InvalidImageError("image could not be read as a picture (not a format Pillow reads)") from exc
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt files
        raise InvalidImageError(f"image is damaged: {exc}") from exc
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        image = background
    image = image.convert("RGB")
    scale = min(1.0, max_output_side / max(image.size))
    if scale < 1.0:
        image = image.resize((max(2, round(image.width * scale)), max(2, round(image.height * scale))), Image.LANCZOS)
    pixels = np.asarray(image, dtype=np.uint8)
    return np.ascontiguousarray(pixels[: pixels.shape[0] // 2 * 2, : pixels.shape[1] // 2 * 2])


def load_portrait_file(path: Path, max_output_side: int = 1024) -> np.ndarray:
    data = path.read_bytes()
    return decode_portrait(data, max_bytes=len(data), max_pixels=10**9, max_output_side=max_output_side)
