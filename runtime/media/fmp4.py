"""Reading a fragmented MP4 as it arrives: the init segment, then each fragment's timing.

What a client of /generate/stream or /ws needs to follow the stream without decoding it: where
each fragment starts and ends in media time per track, how many samples it holds, whether it
starts on a keyframe. (ISO/IEC 14496-12 boxes: moov/trak/tkhd/mdhd/hdlr, mvex/trex,
moof/traf/tfhd/tfdt/trun.)
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Iterator

_CONTAINERS = {b"moov", b"trak", b"mdia", b"mvex", b"moof", b"traf"}
_NON_SYNC = 0x10000  # sample_is_non_sync_sample in sample flags


def iter_boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, box end) of each complete box in data[start:end]."""
    end = len(data) if end is None else end
    position = start
    while position + 8 <= end:
        size, kind = struct.unpack(">I4s", data[position:position + 8])
        header = 8
        if size == 1:
            if position + 16 > end:
                return
            size = struct.unpack(">Q", data[position + 8:position + 16])[0]
            header = 16
        elif size == 0:
            size = end - position
        if size < header or position + size > end:
            return
        yield kind, position + header, position + size
        position += size


def _children(data: bytes, start: int, end: int) -> dict[bytes, list[tuple[int, int]]]:
    found: dict[bytes, list[tuple[int, int]]] = {}
    for kind, payload, box_end in iter_boxes(data, start, end):
        found.setdefault(kind, []).append((payload, box_end))
    return found


@dataclass
class Track:
    track_id: int
    kind: str  # "video" or "audio" (the hdlr handler type: vide / soun)
    timescale: int
    default_duration: int = 0
    default_flags: int = 0


@dataclass
class TrackRun:
    """One track's part of a fragment."""

    start: int  # baseMediaDecodeTime, in the track's timescale
    duration: int
    samples: int
    starts_with_keyframe: bool


@dataclass
class Fragment:
    """A moof + mdat pair; offset and size within the stream."""

    offset: int
    size: int
    runs: dict[str, TrackRun] = field(default_factory=dict)  # by track kind
    timescales: dict[str, int] = field(default_factory=dict)

    def start_seconds(self, kind: str = "video") -> float:
        return self.runs[kind].start / self.timescales[kind]

    def end_seconds(self, kind: str = "video") -> float:
        run = self.runs[kind]
        return (run.start + run.duration) / self.timescales[kind]


def parse_init(data: bytes, start: int, end: int) -> dict[int, Track]:
    """Tracks of a moov box's payload [start, end), by track id."""
    tracks: dict[int, Track] = {}
    moov = _children(data, start, end)
    for trak_start, trak_end in moov.get(b"trak", []):
        trak = _children(data, trak_start, trak_end)
        tkhd = trak[b"tkhd"][0][0]
        version = data[tkhd]
        track_id = struct.unpack(">I", data[tkhd + (20 if version == 1 else 12):][:4])[0]
        mdia = _children(data, *trak[b"mdia"][0])
        mdhd = mdia[b"mdhd"][0][0]
        timescale = struct.unpack(">I", data[mdhd + (20 if data[mdhd] == 1 else 12):][:4])[0]
        handler = data[mdia[b"hdlr"][0][0] + 8:][:4]
        tracks[track_id] = Track(track_id, {b"vide": "video", b"soun": "audio"}.get(handler, handler.decode()), timescale)
    for mvex_start, mvex_end in moov.get(b"mvex", []):
        for trex, _ in _children(data, mvex_start, mvex_end).get(b"trex", []):
            track_id, _, duration, _, flags = struct.unpack(">5I", data[trex + 4:trex + 24])
            if track_id in tracks:
                tracks[track_id].default_duration, tracks[track_id].default_flags = duration, flags
    return tracks


def parse_fragment(data: bytes, start: int, end: int, tracks: dict[int, Track], offset: int, size: int) -> Fragment:
    """A moof box's payload [start, end) -> the fragment's timing per track."""
    fragment = Fragment(offset=offset, size=size)
    for traf_start, traf_end in _children(data, start, end).get(b"traf", []):
        traf = _children(data, traf_start, traf_end)
        tfhd = traf[b"tfhd"][0][0]
        flags = int.from_bytes(data[tfhd + 1:tfhd + 4], "big")
        track = tracks[struct.unpack(">I", data[tfhd + 4:tfhd + 8])[0]]
        position = tfhd + 8 + (8 if flags & 0x1 else 0) + (4 if flags & 0x2 else 0)
        default_duration, default_flags = track.default_duration, track.default_flags
        if flags & 0x8:
            default_duration = struct.unpack(">I", data[position:position + 4])[0]
            position += 4
        if flags & 0x10:
            position += 4
        if flags & 0x20:
            default_flags = struct.unpack(">I", data[position:position + 4])[0]
        tfdt = traf[b"tfdt"][0][0]
        base = struct.unpack(">Q" if data[tfdt] == 1 else ">I", data[tfdt + 4:tfdt + (12 if data[tfdt] == 1 else 8)])[0]
        duration = samples = 0
        first_flags = None
        for trun, _ in traf.get(b"trun", []):
            run_flags = int.from_bytes(data[trun + 1:trun + 4], "big")
            count = struct.unpack(">I", data[trun + 4:trun + 8])[0]
            position = trun + 8 + (4 if run_flags & 0x1 else 0)
            run_first_flags = None
            if run_flags & 0x4:
                run_first_flags = struct.unpack(">I", data[position:position + 4])[0]
                position += 4
            fields = [bit for bit in (0x100, 0x200, 0x400, 0x800) if run_flags & bit]
            for index in range(count):
                values = dict(zip(fields, struct.unpack(f">{len(fields)}I", data[position:position + 4 * len(fields)])))
                position += 4 * len(fields)
                duration += values.get(0x100, default_duration)
                if first_flags is None and samples == 0 and index == 0:
                    first_flags = run_first_flags if run_first_flags is not None else values.get(0x400, default_flags)
            samples += count
        fragment.runs[track.kind] = TrackRun(base, duration, samples, not ((first_flags or 0) & _NON_SYNC))
        fragment.timescales[track.kind] = track.timescale
    return fragment


class FragmentReader:
    """Feed the stream's bytes as they arrive; complete fragments come out of feed()."""

    def __init__(self):
        self._buffer = bytearray()
        self._consumed = 0  # stream offset of _buffer[0]
        self.tracks: dict[int, Track] | None = None
        self.init_size = 0  # bytes of ftyp + moov

    def feed(self, data: bytes) -> list[Fragment]:
        self._buffer.extend(data)
        fragments = []
        view = bytes(self._buffer)
        moof = None  # (payload start, end, box start) of a moof whose mdat has not arrived
        position = 0
        for kind, payload, box_end in iter_boxes(view):
            box_start, position = position, box_end
            if kind == b"moov":
                self.tracks = parse_init(view, payload, box_end)
                self.init_size = self._consumed + box_end
            elif kind == b"moof":
                moof = (payload, box_end, box_start)
            elif kind == b"mdat" and moof is not None and self.tracks is not None:
                fragments.append(parse_fragment(view, moof[0], moof[1], self.tracks,
                                                self._consumed + moof[2], box_end - moof[2]))
                moof = None
        keep_from = moof[2] if moof is not None else position
        del self._buffer[:keep_from]
        self._consumed += keep_from
        return fragments
