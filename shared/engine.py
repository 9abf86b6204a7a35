"""Inference engines: something that turns a batch of tiles into probability tiles.

The pipeline talks to the small `Engine` interface; `load_engine` is the factory. The
OpenVINO engine compiles in the calling process (a model compiled before a fork hangs
in the child with the THROUGHPUT hint / AsyncInferQueue, DESIGN.md) and keeps several
infer requests in flight so both the cores and the Python side stay busy.

Model contract (the trainer's export writes it, manifest "input"/"output"):
input float32 NCHW, BGR, range [0, 1]; output probabilities, N x 1 x H x W; fully
convolutional, so any tile size that is a multiple of 32 works.
"""
import os
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from . import defaults
from .errors import ModelError


@dataclass
class EngineSettings:
    tile: int = defaults.TILE
    batch: int = defaults.BATCH
    device: str = defaults.DEVICE
    precision: str | None = defaults.PRECISION   # "f32", "bf16", "f16" or None (device best)
    threads: int | None = defaults.THREADS
    streams: int | None = defaults.STREAMS
    pin_threads: bool | None = None              # None: OpenVINO decides


class Engine:
    """Runs tiles through a model. `infer` calls `on_output(index, prob_tile)` per tile."""
    tile: int
    batch: int
    info: dict

    def infer(self, tiles: Iterable[tuple[int, np.ndarray]], scale: float,
              on_output: Callable[[int, np.ndarray], None]) -> None:
        raise NotImplementedError


class OpenVINOEngine(Engine):
    def __init__(self, xml_path: str, settings: EngineSettings, info: dict | None = None):
        import openvino as ov
        from openvino.preprocess import PrePostProcessor

        self.tile, self.batch = settings.tile, settings.batch
        self.info = dict(info or {"path": xml_path})
        core = ov.Core()
        try:
            model = core.read_model(xml_path)
        except Exception as exc:
            raise ModelError(f"{xml_path}: cannot read model ({exc})") from None
        if len(model.inputs) != 1:
            raise ModelError(f"{xml_path}: expected one input, found {len(model.inputs)}")
        channels = model.input(0).get_partial_shape()[1]
        self.channels = channels.get_length() if channels.is_static else 3
        try:
            model.reshape([self.batch, self.channels, self.tile, self.tile])
        except Exception as exc:
            raise ModelError(f"{xml_path}: cannot run on {self.tile} px tiles ({exc})") from None
        # Tiles arrive as NHWC slices of the image; OpenVINO transposes on its own threads.
        ppp = PrePostProcessor(model)
        ppp.input().tensor().set_element_type(ov.Type.f32).set_layout(ov.Layout("NHWC"))
        ppp.input().model().set_layout(ov.Layout("NCHW"))
        model = ppp.build()

        config = {"PERFORMANCE_HINT": "THROUGHPUT"}
        if settings.precision:
            config["INFERENCE_PRECISION_HINT"] = settings.precision
        if settings.threads:
            config["INFERENCE_NUM_THREADS"] = int(settings.threads)
        if settings.streams:
            config["NUM_STREAMS"] = int(settings.streams)
        if settings.pin_threads is not None:
            config["ENABLE_CPU_PINNING"] = bool(settings.pin_threads)
        try:
            self.compiled = core.compile_model(model, settings.device, config)
        except Exception as exc:
            raise ModelError(f"{xml_path}: compile failed on {settings.device} ({exc})") from None
        count = max(1, self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self._requests = [self.compiled.create_infer_request() for _ in range(count)]
        self.info["inference_precision"] = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()

    def infer(self, tiles, scale, on_output):
        """Fill batches from `tiles` ((index, HxW[xC] array) pairs), scale to [0, 1], infer.

        Several requests are kept in flight, round robin: while one runs, the next batch
        is written straight into another request's input tensor (no extra copy). No Python
        callbacks or Python objects are handed to OpenVINO: a callback or a shared numpy
        array is released on an OpenVINO thread, which then needs the GIL while this
        thread, holding it, waits in a destructor (a deadlock seen with AsyncInferQueue
        callbacks and share_inputs). Partial last batches are padded with zeros.
        """
        pending = [None] * len(self._requests)       # tile indices each request carries
        submitted = 0

        def collect(slot):
            request = self._requests[slot]
            request.wait()
            probs = request.get_output_tensor(0).data
            for position, index in enumerate(pending[slot]):
                on_output(index, probs[position, 0])
            pending[slot] = None

        def batches():
            indices, chunk = [], []
            for index, pixels in tiles:
                indices.append(index)
                chunk.append(pixels)
                if len(indices) == self.batch:
                    yield indices, chunk
                    indices, chunk = [], []
            if indices:
                yield indices, chunk

        try:
            for indices, chunk in batches():
                slot = submitted % len(self._requests)
                if pending[slot] is not None:
                    collect(slot)
                buffer = self._requests[slot].get_input_tensor(0).data
                for position, pixels in enumerate(chunk):
                    src = pixels if pixels.ndim == 3 else pixels[:, :, None]
                    np.multiply(src, np.float32(scale), out=buffer[position], casting="unsafe")
                buffer[len(chunk):] = 0
                pending[slot] = indices
                self._requests[slot].start_async()
                submitted += 1
            for k in range(submitted, submitted + len(self._requests)):   # oldest first
                if pending[k % len(self._requests)] is not None:
                    collect(k % len(self._requests))
        finally:
            for request in self._requests:              # never leave a request running
                request.wait()


def load_engine(model_ref: str | None = None, settings: EngineSettings | None = None,
                registry_root: str | None = None):
    """Resolve a model reference in the registry, verify it, compile it here.

    Returns (engine, handle): the handle carries the manifest (recommended settings).
    """
    from .registry import resolve

    handle = resolve(model_ref, registry_root)
    settings = settings or EngineSettings()
    return OpenVINOEngine(handle.xml, settings, info=handle.describe()), handle


def cpu_count() -> int:
    """Cores this process may use (respects affinity masks and container cpusets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
