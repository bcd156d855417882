"""The render loop both engines share: fixed-shape batches on the device, frames on the host.

A clip's per-frame inputs (driving keypoints, coefficient windows...) are cut into batches of one
size; the last batch is padded, so a compiled batch never recompiles and cuDNN's tuned kernels
are reused for any clip length. Each batch is rendered into the portrait's face box on the device
(uint8), copied to a pinned host buffer on a side stream (two buffers: the host reads batch i
while the device renders batch i+1), and pasted into copies of the portrait.

`CapturedBatch` replays a compiled fixed-shape batch function as one CUDA graph.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

BatchFunction = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class FaceBox:
    """Where the rendered face goes: the portrait (H, W, 3) uint8 and the box (x0, y0, x1, y1)
    in its pixels that the device renders, every pixel outside it kept."""

    portrait: np.ndarray
    box: tuple[int, int, int, int]


class CapturedBatch:
    """A fixed-shape render function captured once as a CUDA graph; each call copies the inputs
    into the captured ones and replays: one launch instead of hundreds from Python, each of which
    needs the GIL that the encoder thread also wants. Returns a fresh tensor (the captured output
    is rewritten by every replay)."""

    def __init__(self, render: BatchFunction, *example: torch.Tensor):
        self.inputs = tuple(tensor.clone() for tensor in example)
        side = torch.cuda.Stream()  # capture needs a side stream and one run there first
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            render(*self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = render(*self.inputs)

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        for captured, given in zip(self.inputs, tensors):
            captured.copy_(given)
        self.graph.replay()
        return self.output.clone()


def capture_if_cuda(render: BatchFunction, *example: torch.Tensor) -> BatchFunction:
    """`render` as a CUDA graph on CUDA (checked to replay what it computed), else unchanged."""
    if example[0].device.type != "cuda":
        return render
    direct = render(*example).float()
    captured = CapturedBatch(render, *example)
    replayed = captured(*example).float()
    if (replayed - direct).abs().max().item() > 1e-3:
        raise RuntimeError("the CUDA graph replays a different render than the direct call")
    return captured


def measure_frames_per_second(render: BatchFunction, frames: int, *inputs: torch.Tensor, repeats: int = 3) -> float:
    """Frames per second of `render(*inputs)` rendering `frames` frames a call (after one call
    to warm it), timed over `repeats` calls up to the device's completion."""
    device = inputs[0].device

    def finish() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    render(*inputs)
    finish()
    started = time.perf_counter()
    for _ in range(repeats):
        render(*inputs)
    finish()
    return frames * repeats / (time.perf_counter() - started)


def padded_batches(rows: torch.Tensor, batch_size: int, pad: bool,
                   padded_size: Callable[[int], int] | None = None) -> Iterator[tuple[torch.Tensor, int]]:
    """(chunk, real rows) for consecutive batches of `rows` (N, ...); with pad, the last chunk
    repeats its last row up to batch_size, or up to padded_size(its rows) where given (a smaller
    shape the engine has ready); the extra rows are rendered and dropped."""
    for start in range(0, rows.shape[0], batch_size):
        chunk = rows[start:start + batch_size]
        count = chunk.shape[0]
        size = padded_size(count) if padded_size is not None and count < batch_size else batch_size
        yield (pad_rows(chunk, size) if pad else chunk), count


@dataclass
class RenderTimings:
    """Where a clip's render loop spent its seconds (host clock), for /health and the benches."""

    batches: int = 0
    launch_seconds: float = 0.0  # computing the batch's inputs and launching (or replaying) its render
    device_wait_seconds: float = 0.0  # waiting for the device to finish a batch and its copy to the host
    host_paste_seconds: float = 0.0  # copying the portrait and putting the face box into it, per frame

    def add(self, other: "RenderTimings") -> None:
        """Count another render loop's seconds in (a stream's units, one after another)."""
        self.batches += other.batches
        self.launch_seconds += other.launch_seconds
        self.device_wait_seconds += other.device_wait_seconds
        self.host_paste_seconds += other.host_paste_seconds

    def as_dict(self) -> dict:
        return {"batches": self.batches, "launch_seconds": round(self.launch_seconds, 4),
                "device_wait_seconds": round(self.device_wait_seconds, 4),
                "host_paste_seconds": round(self.host_paste_seconds, 4)}


def to_device(values, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A host tensor, array or list on the device without waiting for the device: from pinned
    memory, asynchronously (a plain host-to-CUDA copy waits for the batch rendering before it)."""
    tensor = torch.as_tensor(values, dtype=dtype)
    if tensor.device == torch.device(device) or torch.device(device).type != "cuda":
        return tensor.to(device)
    if tensor.device.type == "cpu":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def portrait_index_tensor(portrait_index: Sequence[int], portraits: int, frames: int) -> torch.Tensor:
    """A mixed batch's portrait_index (frame i renders portrait portrait_index[i]) as a (frames,)
    long tensor, checked: one index a frame, each naming one of the `portraits`."""
    index = torch.as_tensor(list(portrait_index), dtype=torch.long)
    if index.shape != (frames,):
        raise ValueError(f"{index.numel()} portrait indices for {frames} frames")
    if frames and (index.min() < 0 or index.max() >= portraits):
        raise ValueError(f"portrait indices must lie in [0, {portraits})")
    return index


def rows_by_portrait(index: torch.Tensor, portraits: int) -> Iterator[tuple[int, list[int]]]:
    """(portrait, the batch rows that render it) for each portrait with at least one frame."""
    rows: list[list[int]] = [[] for _ in range(portraits)]
    for row, portrait in enumerate(index.tolist()):
        rows[portrait].append(row)
    return ((portrait, taken) for portrait, taken in enumerate(rows) if taken)


def pad_rows(rows: torch.Tensor, batch_size: int) -> torch.Tensor:
    """rows (N, ...) with N <= batch_size, its last row repeated up to batch_size (one shape for
    a compiled batch; the extra rows are rendered and dropped)."""
    if rows.shape[0] > batch_size:
        raise ValueError(f"{rows.shape[0]} frames exceed the batch size {batch_size}")
    return torch.cat([rows, rows[-1:].expand(batch_size - rows.shape[0], *rows.shape[1:])])


@dataclass(frozen=True)
class PortraitRows:
    """One portrait's share of a batch: its rendered face boxes (n, h, w, 3) uint8 on the device,
    where they go (`face`), and which frames of the batch they are (`rows`, n positions)."""

    boxes: torch.Tensor
    face: FaceBox
    rows: Sequence[int]


class HostFrames:
    """Moves batches of rendered face boxes to the host and pastes them into their portraits.

    One per engine (it keeps the copy stream and the last clip's timings); not thread-safe,
    like the engines. The pinned buffers belong to each call (torch's pinned-memory cache
    recycles them), so a mixed batch and a clip's render do not share one."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self._copy_stream: torch.cuda.Stream | None = None
        self.last = RenderTimings()

    def frames(self, boxes_per_batch: Iterator[tuple[torch.Tensor, int]], face: FaceBox) -> Iterator[np.ndarray]:
        """One portrait: boxes_per_batch yields ((B, h, w, 3) uint8 on the device, real rows);
        yields full frames (H, W, 3) uint8 in order. The next batch is requested (and queued on
        the device) before the previous one is read on the host."""
        batches = ([PortraitRows(boxes[:count], face, range(count))] for boxes, count in boxes_per_batch)
        return self.mixed_frames(batches)

    def mixed_frames(self, batches: Iterable[Sequence[PortraitRows]]) -> Iterator[np.ndarray]:
        """Batches of several portraits: each batch's PortraitRows cover its frames 0..n-1 between
        them; yields each batch's full frames (H_v, W_v, 3) uint8 in row order, every frame in
        its own portrait. Double-buffered as `frames`: batch i+1 is requested before batch i is
        pasted."""
        timings = self.last = RenderTimings()
        buffers: list[torch.Tensor] = []  # flat pinned bytes, two in turn (CUDA only)
        pending: tuple[list[tuple[np.ndarray, int, FaceBox]], torch.cuda.Event | None] | None = None
        batches = iter(batches)
        for index in itertools.count():
            started = time.perf_counter()
            pieces = next(batches, None)
            if pieces is None:
                break
            if self.device.type == "cuda":
                needed = sum(piece.boxes.numel() for piece in pieces)
                if len(buffers) < 2:
                    buffers.append(torch.empty(needed, dtype=torch.uint8, pin_memory=True))
                slot = index % 2  # the batch that used it last has been pasted
                if buffers[slot].numel() < needed:
                    buffers[slot] = torch.empty(needed, dtype=torch.uint8, pin_memory=True)
                hosts, event = self._copy_to_host([piece.boxes for piece in pieces], buffers[slot])
            else:
                hosts, event = [piece.boxes.cpu() for piece in pieces], None
            order = _row_order(pieces, [host.numpy() for host in hosts])
            timings.batches += 1
            timings.launch_seconds += time.perf_counter() - started
            if pending is not None:
                yield from self._paste(*pending, timings)
            pending = (order, event)
        if pending is not None:
            yield from self._paste(*pending, timings)

    def _copy_to_host(self, boxes: Sequence[torch.Tensor], buffer: torch.Tensor) -> tuple[list[torch.Tensor], torch.cuda.Event]:
        """Device -> pinned host copies into consecutive views of `buffer`, on a side stream, so
        the next batch renders while they run (on the render stream they would wait behind the
        copies). Returns the host views and the copies' completion event."""
        if self._copy_stream is None:
            self._copy_stream = torch.cuda.Stream(self.device)
        rendered = torch.cuda.Event()
        rendered.record()
        hosts, offset = [], 0
        with torch.cuda.stream(self._copy_stream):
            self._copy_stream.wait_event(rendered)
            for tensor in boxes:
                host = buffer[offset:offset + tensor.numel()].view(tensor.shape)
                host.copy_(tensor, non_blocking=True)
                tensor.record_stream(self._copy_stream)  # the allocator must not reuse it before the copy ends
                hosts.append(host)
                offset += tensor.numel()
            copied = torch.cuda.Event()
            copied.record()
        return hosts, copied

    @staticmethod
    def _paste(order: list[tuple[np.ndarray, int, FaceBox]], event: torch.cuda.Event | None,
               timings: RenderTimings) -> Iterator[np.ndarray]:
        started = time.perf_counter()
        if event is not None:
            event.synchronize()
        timings.device_wait_seconds += time.perf_counter() - started
        for boxes, position, face in order:
            started = time.perf_counter()
            x0, y0, x1, y1 = face.box
            frame = face.portrait.copy()
            frame[y0:y1, x0:x1] = boxes[position]
            timings.host_paste_seconds += time.perf_counter() - started
            yield frame


def _row_order(pieces: Sequence[PortraitRows], hosts: Sequence[np.ndarray]) -> list[tuple[np.ndarray, int, FaceBox]]:
    """For each frame of the batch in row order: (its portrait's host boxes, its position there, its face)."""
    frames = sum(len(piece.rows) for piece in pieces)
    order: list = [None] * frames
    for piece, host in zip(pieces, hosts):
        if len(piece.rows) != host.shape[0]:
            raise ValueError(f"{len(piece.rows)} rows for {host.shape[0]} rendered boxes")
        for position, row in enumerate(piece.rows):
            if not 0 <= row < frames or order[row] is not None:
                raise ValueError(f"row {row} of a {frames}-frame batch is missing or given twice")
            order[row] = (host, position, piece.face)
    return order
