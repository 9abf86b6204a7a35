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
        self.requests = max(1, self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.info["inference_precision"] = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        self._ov = ov

    def infer(self, tiles, scale, on_output):
        """Fill batches from `tiles` ((index, HxW[xC] array) pairs), scale to [0, 1], infer.

        Partial last batches are padded with zeros. Outputs are handed to `on_output` on
        the calling thread's behalf by OpenVINO's callback (serialised by the GIL).
        """
        queue = self._ov.AsyncInferQueue(self.compiled, self.requests)
        errors = []

        def done(request, userdata):
            indices, _batch = userdata        # the batch rides along: it must outlive the request
            try:
                probs = request.get_output_tensor(0).data
                for slot, index in enumerate(indices):
                    on_output(index, probs[slot, 0])
            except Exception as exc:          # surfaced after wait_all
                errors.append(exc)

        queue.set_callback(done)
        batch, indices = None, []
        for index, pixels in tiles:
            if batch is None:
                batch = np.zeros((self.batch, self.tile, self.tile, self.channels), np.float32)
            slot = batch[len(indices)]
            src = pixels if pixels.ndim == 3 else pixels[:, :, None]
            np.multiply(src, np.float32(scale), out=slot, casting="unsafe")
            indices.append(index)
            if len(indices) == self.batch:
                queue.start_async(batch, (indices, batch), share_inputs=True)
                batch, indices = None, []
        if indices:
            queue.start_async(batch, (indices, batch), share_inputs=True)
        queue.wait_all()
        if errors:
            raise errors[0]


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
