"""Small real OpenVINO models for tests, built with the opset API and saved as IR."""
import os

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from shared import registry


def _parameter():
    return ops.parameter([-1, 3, -1, -1], ov.Type.f32, name="image")


def identity_model() -> ov.Model:
    """Output = the input's first channel: merging tiles back must reproduce the image."""
    image = _parameter()
    first = ops.slice(image, np.array([0]), np.array([1]), np.array([1]), np.array([1]))
    return ov.Model([first], [image], "identity")


def conv_model(seed: int = 0, layers: int = 3, width: int = 8) -> ov.Model:
    """A random fully convolutional net (3x3 convs, zero padding) ending in a sigmoid.

    Its receptive field is 2 * layers + 1 pixels, so tile-edge effects reach `layers` px.
    """
    rng = np.random.default_rng(seed)
    image = _parameter()
    x, channels = image, 3
    for i in range(layers):
        out = 1 if i == layers - 1 else width
        w = rng.normal(0, 1.0 / np.sqrt(9 * channels), (out, channels, 3, 3)).astype(np.float32)
        x = ops.convolution(x, ops.constant(w), [1, 1], [1, 1], [1, 1], [1, 1])
        if i < layers - 1:
            x = ops.relu(x)
        channels = out
    return ov.Model([ops.sigmoid(ops.multiply(x, ops.constant(np.float32(4.0))))], [image], "conv")


def publish_model(model: ov.Model, root: str, name: str, version: str = "1",
                  recommended: dict | None = None) -> registry.ModelHandle:
    """Save an IR (FP32 weights, exact numbers) and publish it into a registry root."""
    scratch = os.path.join(root, ".scratch", name, version)
    os.makedirs(scratch, exist_ok=True)
    xml = os.path.join(scratch, "model.xml")
    ov.save_model(model, xml, compress_to_fp16=False)
    manifest = {"architecture": {"family": model.get_friendly_name()}, "precision": "fp32",
                "input": {"layout": "NCHW", "channels": "BGR", "range": [0, 1]},
                "output": "probability", "recommended": recommended or {}}
    return registry.publish(root, name, version, xml, manifest)
