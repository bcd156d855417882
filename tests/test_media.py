"""Encoding, audio decoding and portrait decoding on their own."""
from __future__ import annotations

import io

import av
import numpy as np
import pytest
from PIL import Image

from runtime.errors import AudioTooLargeError, ImageTooLargeError, InvalidAudioError, InvalidImageError
from runtime.media.audio import Speech, decode_audio, wav_bytes
from runtime.media.encode import encode_mp4
from runtime.media.portrait import decode_portrait

pytestmark = pytest.mark.unit


def test_audio_and_video_line_up_to_the_frame(tmp_path):
    """A click at 4.0 s and a white frame at 4.0 s stay together (AAC priming trimmed)."""
    rate, fps = 22050, 25
    samples = np.zeros(rate * 6, np.float32)
    samples[rate * 4 : rate * 4 + 220] = 0.9
    frames = (np.full((64, 96, 3), 255 if i == 100 else 0, np.uint8) for i in range(150))
    result = encode_mp4(frames, Speech(samples, rate), fps, tmp_path / "sync.mp4")
    assert result.frames == 150 and result.duration == 6.0
    with av.open(str(tmp_path / "sync.mp4")) as container:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
        audio_rate = container.streams.audio[0].codec_context.sample_rate
    with av.open(str(tmp_path / "sync.mp4")) as container:
        white = [float(f.pts * f.time_base) for f in container.decode(video=0) if f.to_ndarray(format="gray").mean() > 128]
    click = np.argmax(np.abs(audio) > 0.3) / audio_rate
    assert white == [4.0]
    assert abs(click - 4.0) < 0.5 / fps


def test_fragmented_stream_keeps_sync_and_starts_every_fragment_on_a_keyframe(tmp_path):
    """The same click-and-flash clip as a fragmented MP4 fed in uneven speech pieces: init
    segment first, a short first fragment (a player starts after 4 frames) and fragments doubling
    to ~0.5 s, each starting on a keyframe with the audio of the same span, continuous timestamps,
    audio and video of equal length, and the click still on the flash."""
    from runtime.media.encode import Mp4Encoder
    from runtime.media.fmp4 import FragmentReader, iter_boxes

    rate, fps = 22050, 25
    samples = np.zeros(rate * 6 - 3000, np.float32)  # the speech ends a little before the video
    samples[rate * 4 : rate * 4 + 220] = 0.9
    encoder = Mp4Encoder(fps, fragment_frames=12)
    pieces, reader, fragments = [], FragmentReader(), []
    cuts = [0, 5000, 30000, 31000, 90000, len(samples)]
    for i in range(150):
        if i < len(cuts) - 1:
            encoder.add_speech(Speech(samples[cuts[i]:cuts[i + 1]], rate))
        encoder.add_frame(np.full((64, 96, 3), 255 if i == 100 else 0, np.uint8))
        pieces.append(encoder.take())
        fragments += reader.feed(pieces[-1])
    assert sum(map(len, pieces[:4])) == 0 and pieces[4], "the 4-frame first fragment leaves with the next keyframe"
    result = encoder.close()
    pieces.append(encoder.take())
    fragments += reader.feed(pieces[-1])
    data = b"".join(pieces)
    assert result.frames == 150
    assert [kind for kind, _, _ in iter_boxes(data)][:4] == [b"ftyp", b"moov", b"moof", b"mdat"]
    assert len(fragments) == 14 and all(f.runs["video"].starts_with_keyframe for f in fragments)
    assert [f.runs["video"].samples for f in fragments] == [4, 8] + [12] * 11 + [6]
    for before, after in zip(fragments, fragments[1:]):
        for kind in ("video", "audio"):
            assert before.runs[kind].start + before.runs[kind].duration == after.runs[kind].start
        assert abs(after.start_seconds("audio") - after.start_seconds("video")) < 0.05
    path = tmp_path / "stream.mp4"
    path.write_bytes(data)
    with av.open(str(path)) as container:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
        audio_rate = container.streams.audio[0].codec_context.sample_rate
    with av.open(str(path)) as container:
        video = [float(f.pts * f.time_base) for f in container.decode(video=0)]
    with av.open(str(path)) as container:
        white = [float(f.pts * f.time_base) for f in container.decode(video=0) if f.to_ndarray(format="gray").mean() > 128]
    assert len(video) == 150 and white == [4.0]
    assert abs(len(audio) / audio_rate - 6.0) < 0.03  # edit list trims the priming; padded to the video
    assert abs(np.argmax(np.abs(audio) > 0.3) / audio_rate - 4.0) < 0.5 / fps


def test_encoder_refuses_a_short_frame_stream(tmp_path):
    frames = (np.zeros((32, 32, 3), np.uint8) for _ in range(3))
    with pytest.raises(RuntimeError, match="3 frames; 25 were expected"):
        encode_mp4(frames, Speech(np.zeros(16000, np.float32), 16000), 25, tmp_path / "x.mp4", expected_frames=25)


def test_decode_audio_reads_wav_and_refuses_garbage():
    speech = Speech(np.sin(np.linspace(0, 2000, 16000)).astype(np.float32) * 0.5, 16000)
    decoded = decode_audio(wav_bytes(speech), max_seconds=10, max_bytes=10**6)
    assert decoded.sample_rate == 16000 and abs(len(decoded.samples) - 16000) < 10
    with pytest.raises(InvalidAudioError):
        decode_audio(b"definitely not audio" * 100, max_seconds=10, max_bytes=10**6)
    with pytest.raises(AudioTooLargeError, match="longer than the limit"):
        decode_audio(wav_bytes(speech), max_seconds=0.5, max_bytes=10**6)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_decode_portrait_normalises_mode_and_size():
    limits = dict(max_bytes=10**7, max_pixels=10**8, max_output_side=1024)
    grey = decode_portrait(_png(Image.new("L", (301, 201), 128)), **limits)
    assert grey.shape == (200, 300, 3) and grey.dtype == np.uint8
    transparent = decode_portrait(_png(Image.new("RGBA", (64, 64), (0, 0, 0, 0))), **limits)
    assert (transparent == 255).all()  # composited on white
    big = decode_portrait(_png(Image.new("RGB", (3000, 1500))), **limits)
    assert big.shape == (512, 1024, 3)


def test_decode_portrait_refuses_before_decoding_pixels():
    with pytest.raises(ImageTooLargeError):
        decode_portrait(_png(Image.new("L", (5000, 5000))), max_bytes=10**7, max_pixels=10**6, max_output_side=1024)
    with pytest.raises(InvalidImageError):
        decode_portrait(b"GIF89a" + b"\0" * 50, max_bytes=10**7, max_pixels=10**6, max_output_side=1024)
