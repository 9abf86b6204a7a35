"""How fast would a network be, before anyone trains it: OpenVINO throughput per tile of
candidate encoders and decoder widths, random weights (speed does not depend on them).

    python -m trainer.candidates efficientnet-b1:128-64-32-16-8 tu-mobilenetv4_conv_small:32-16-16-8-8

Each candidate is built by trainer.model, converted as `dustspot export` converts (FP16 IR) and
compiled as the worker compiles it (THROUGHPUT hint, every core), then fed one tile per request
with as many requests in flight as OpenVINO asks for: the seed geometry's way of running.
"""
import argparse
import os
import tempfile
import time

import numpy as np

from . import settings

TILE = 224                   # the seed geometry's tile
REQUESTS_PER_ROUND = 120


def ms_per_tile(xml_path: str, tile: int = TILE, rounds: int = 3) -> float:
    """Best of `rounds` rounds: milliseconds per tile with the worker's compile settings."""
    import openvino as ov
    core = ov.Core()
    model = core.read_model(xml_path)
    model.reshape({model.inputs[0].any_name: [1, 3, tile, tile]})
    compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT"})
    queue = ov.AsyncInferQueue(compiled, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
    x = np.random.default_rng(0).random((1, 3, tile, tile), dtype=np.float32)
    for _ in range(8):                                    # warm-up
        queue.start_async({0: x})
    queue.wait_all()
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(REQUESTS_PER_ROUND):
            queue.start_async({0: x})
        queue.wait_all()
        best = min(best, (time.perf_counter() - t) / REQUESTS_PER_ROUND)
    return best * 1000


def parse(candidate: str) -> tuple[str, tuple[int, ...]]:
    """'ENCODER:D1-D2-D3-D4-D5' (decoder widths, deepest first) -> (encoder, widths)."""
    encoder, _, widths = candidate.partition(":")
    decoder = tuple(int(w) for w in widths.split("-")) if widths else settings.DECODER_CHANNELS
    return encoder, decoder


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidates", nargs="+", help="ENCODER:D1-D2-D3-D4-D5 (smp or tu-<timm> encoder)")
    parser.add_argument("--arch", default=settings.ARCH)
    parser.add_argument("--tile", type=int, default=TILE)
    args = parser.parse_args(argv)
    from .export import to_ir
    from .model import DustNet
    with tempfile.TemporaryDirectory() as folder:
        for candidate in args.candidates:
            encoder, decoder = parse(candidate)
            xml = to_ir(DustNet(args.arch, encoder, decoder).eval(), os.path.join(folder, "candidate.xml"))
            print(f"{encoder:30s} {'-'.join(map(str, decoder)):18s} {ms_per_tile(xml, args.tile):7.2f} ms per "
                  f"{args.tile} px tile", flush=True)


if __name__ == "__main__":
    main()
