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
from collections.abc import Callable, Iterator
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


def padded_batches(rows: torch.Tensor, batch_size: int, pad: bool) -> Iterator[tuple[torch.Tensor, int]]:
    """(chunk, real rows) for consecutive batches of `rows` (N, ...); with pad, the last chunk
    repeats its last row up to batch_size (the extra rows are rendered and dropped)."""
    for start in range(0, rows.shape[0], batch_size):
        chunk = rows[start:start + batch_size]
        count = chunk.shape[0]
        if pad and count < batch_size:
            chunk = torch.cat([chunk, chunk[-1:].expand(batch_size - count, *chunk.shape[1:])])
        yield chunk, count


@dataclass
class RenderTimings:
    """Where a clip's render loop spent its seconds (host clock), for /health and the benches."""

    batches: int = 0
    launch_seconds: float = 0.0  # computing the batch's inputs and launching (or replaying) its render
    device_wait_seconds: float = 0.0  # waiting for the device to finish a batch and its copy to the host
    host_paste_seconds: float = 0.0  # copying the portrait and putting the face box into it, per frame

    def as_dict(self) -> dict:
        return {"batches": self.batches, "launch_seconds": round(self.launch_seconds, 4),
                "device_wait_seconds": round(self.device_wait_seconds, 4),
                "host_paste_seconds": round(self.host_paste_seconds, 4)}


class HostFrames:
    """Moves batches of rendered face boxes to the host and pastes them into the portrait.

    One per engine (it keeps the copy stream and the last clip's timings); not thread-safe,
    like the engines."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self._copy_stream: torch.cuda.Stream | None = None
        self.last = RenderTimings()

    def frames(self, boxes_per_batch: Iterator[tuple[torch.Tensor, int]], face: FaceBox) -> Iterator[np.ndarray]:
        """boxes_per_batch yields ((B, h, w, 3) uint8 on the device, real rows); yields full
        frames (H, W, 3) uint8 in order. The next batch is requested (and queued on the device)
        before the previous one is read on the host."""
        timings = self.last = RenderTimings()
        buffers: list[torch.Tensor] = []
        pending: tuple[torch.Tensor, int, torch.cuda.Event | None] | None = None
        batches = iter(boxes_per_batch)
        for index in itertools.count():
            started = time.perf_counter()
            boxes_and_count = next(batches, None)
            if boxes_and_count is None:
                break
            boxes, count = boxes_and_count
            if self.device.type == "cuda":
                if len(buffers) < 2:
                    buffers.append(torch.empty(boxes.shape, dtype=torch.uint8, pin_memory=True))
                host = buffers[index % 2]  # the batch that used it last has been consumed
                if host.shape != boxes.shape:  # a short last batch (when not padded)
                    host = torch.empty(boxes.shape, dtype=torch.uint8, pin_memory=True)
                event = self._copy_to_host(boxes, host)
            else:
                host, event = boxes.cpu(), None
            timings.batches += 1
            timings.launch_seconds += time.perf_counter() - started
            if pending is not None:
                yield from self._paste(face, *pending, timings)
            pending = (host, count, event)
        if pending is not None:
            yield from self._paste(face, *pending, timings)

    def _copy_to_host(self, boxes: torch.Tensor, host: torch.Tensor) -> torch.cuda.Event:
        """Device -> pinned host copy on a side stream, so the next batch renders while it runs
        (on the render stream it would wait behind the copy). Returns the copy's completion event."""
        if self._copy_stream is None:
            self._copy_stream = torch.cuda.Stream(self.device)
        rendered = torch.cuda.Event()
        rendered.record()
        with torch.cuda.stream(self._copy_stream):
            self._copy_stream.wait_event(rendered)
            host.copy_(boxes, non_blocking=True)
            boxes.record_stream(self._copy_stream)  # the allocator must not reuse boxes before the copy ends
            copied = torch.cuda.Event()
            copied.record()
        return copied

    @staticmethod
    def _paste(face: FaceBox, host: torch.Tensor, count: int, event: torch.cuda.Event | None,
               timings: RenderTimings) -> Iterator[np.ndarray]:
        started = time.perf_counter()
        if event is not None:
            event.synchronize()
        timings.device_wait_seconds += time.perf_counter() - started
        x0, y0, x1, y1 = face.box
        boxes = host.numpy()
        for i in range(count):
            started = time.perf_counter()
            frame = face.portrait.copy()
            frame[y0:y1, x0:x1] = boxes[i]
            timings.host_paste_seconds += time.perf_counter() - started
            yield frame
