"""Reading what the service sends: the first picture of a (possibly partial) mp4 stream."""
from __future__ import annotations

import io

import av


def first_video_frame(data: bytes) -> av.VideoFrame | None:
    """The first decodable video frame of the mp4 bytes received so far, or None while the bytes
    hold none yet (a partial init segment or fragment is not an error here)."""
    try:
        with av.open(io.BytesIO(data)) as container:
            for frame in container.decode(video=0):
                return frame
    except (av.error.FFmpegError, ValueError, IndexError):
        return None
    return None
