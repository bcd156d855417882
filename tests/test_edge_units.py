"""The pieces of the edge that need no server: JSON nesting, the rate limit's buckets, the text rule,
reduced-size portrait decoding, and storing a backend's preparation as plain arrays."""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from runtime.api.auth import TokenBucket
from runtime.api.guards import json_nesting_depth, parse_json_object
from runtime.errors import InvalidTextError, UserInputError
from runtime.media.portrait import PortraitDecoder, decode_portrait
from runtime.text_rules import check_text_characters

pytestmark = pytest.mark.unit

LIMITS = dict(max_bytes=50_000_000, max_pixels=50_000_000, max_output_side=1024)


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_json_nested_a_hundred_thousand_deep_is_a_400_not_a_recursion_error():
    body = b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert json_nesting_depth(body) == 100_001
    with pytest.raises(UserInputError) as refused:
        parse_json_object(body, max_depth=32)
    assert refused.value.status_code == 400 and "deeper than 32" in refused.value.detail


def test_brackets_inside_strings_do_not_count_as_nesting():
    body = b'{"text": "[[[{{{ \\" [[[", "fps": 25}'
    assert json_nesting_depth(body) == 1
    assert parse_json_object(body, max_depth=2)["fps"] == 25


def test_a_client_past_its_burst_waits_for_the_refill():
    bucket = TokenBucket(per_minute=60, burst=2)
    assert bucket.take("a", now=0.0) == 0 and bucket.take("a", now=0.0) == 0
    assert bucket.take("a", now=0.0) == pytest.approx(1.0)
    assert bucket.take("b", now=0.0) == 0  # clients do not share a bucket
    assert bucket.take("a", now=1.5) == 0


@pytest.mark.parametrize("text", ["nul\x00inside", "escape\x1b[31m", "lone \ud800 surrogate", "c1\x85"])
def test_control_characters_and_lone_surrogates_are_refused(text):
    with pytest.raises(InvalidTextError):
        check_text_characters(text)


def test_tabs_newlines_and_ordinary_unicode_are_accepted():
    check_text_characters("Line one.\r\n\tLine two: café, 東京, emoji 🙂, zero\u200bwidth.")


def test_a_16_bit_greyscale_portrait_is_scaled_not_clipped_to_white(astronaut):
    grey = np.asarray(Image.fromarray(astronaut).convert("L"))
    deep = Image.fromarray(grey.astype(np.uint16) * 257)
    assert deep.mode == "I;16"
    decoded = decode_portrait(_encoded(deep, "PNG"), **LIMITS)
    assert decoded.shape == (512, 512, 3)
    assert np.abs(decoded[..., 0].astype(int) - grey).max() <= 1


def test_a_float_portrait_is_scaled_to_its_range(astronaut):
    grey = np.asarray(Image.fromarray(astronaut).convert("L")).astype(np.float32) / 255.0
    decoded = decode_portrait(_encoded(Image.fromarray(grey, "F"), "TIFF"), **LIMITS)
    assert decoded.mean() == pytest.approx(grey.mean() / grey.max() * 255, abs=2)


def test_a_huge_jpeg_is_decoded_at_a_reduced_scale(astronaut):
    big = Image.fromarray(astronaut).resize((6144, 6144))
    data = _encoded(big, "JPEG", quality=80)
    opened = Image.open(io.BytesIO(data))
    opened.draft("RGB", (1024, 1024))
    assert opened.size == (1536, 1536)  # libjpeg decodes at 1/4 scale, never the 37 megapixels
    decoded = decode_portrait(data, **LIMITS)
    assert decoded.shape == (1024, 1024, 3)
    expected = np.asarray(Image.fromarray(astronaut).resize((1024, 1024)), np.float32)
    assert np.abs(decoded.astype(np.float32) - expected).mean() < 8


def test_exif_orientation_is_applied_after_the_reduction(astronaut):
    tall = Image.fromarray(astronaut).resize((3000, 2000))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to show
    decoded = decode_portrait(_encoded(tall, "JPEG", exif=exif.tobytes()), **LIMITS)
    assert decoded.shape[0] > decoded.shape[1]


def test_the_decoder_refuses_too_many_pixels_from_the_header(astronaut):
    decoder = PortraitDecoder(max_bytes=10_000_000, max_pixels=1_000_000, max_output_side=1024)
    data = _encoded(Image.new("L", (2000, 1000)), "PNG")
    with pytest.raises(UserInputError) as refused:
        decoder.decode(data)
    assert refused.value.status_code == 413


@dataclass(frozen=True)
class _Inner:
    points: np.ndarray
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class _Prepared:
    image: np.ndarray
    inner: _Inner
    gap: float
    colors: tuple[np.ndarray, ...]


def test_a_preparation_round_trips_through_plain_arrays(tmp_path):
    from runtime.avatars import _flatten, _unflatten

    prepared = _Prepared(np.arange(12, dtype=np.uint8).reshape(2, 2, 3),
                         _Inner(np.ones((5, 2), np.float32), (1, 2, 3, 4)), 0.25,
                         (np.zeros(3, np.float32), np.ones(3, np.float32)))
    np.savez(tmp_path / "p.npz", **_flatten(prepared))
    with np.load(tmp_path / "p.npz", allow_pickle=False) as arrays:
        restored = _unflatten(_Prepared, dict(arrays))
    assert restored.inner.box == (1, 2, 3, 4) and restored.gap == 0.25
    np.testing.assert_array_equal(restored.image, prepared.image)
    np.testing.assert_array_equal(restored.colors[1], prepared.colors[1])


def test_request_folders_of_a_crashed_server_are_removed_at_the_next_start(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys
    import tempfile

    from runtime import workdirs

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    crashed = tmp_path / f"avatar-service-{int(dead.stdout)}" / "request-abc"
    crashed.mkdir(parents=True)
    (crashed / "half-written.mp4").write_bytes(b"\0" * 1000)
    mine = workdirs.new_workdir()  # this process's own: kept
    assert workdirs.remove_stale_workdirs() == 1
    assert not crashed.parent.exists() and mine.exists() and mine.parent.name == f"avatar-service-{os.getpid()}"
