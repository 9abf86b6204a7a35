"""Shared fixtures: a registry of small real OpenVINO models, and scan writers."""
import os

import cv2
import numpy as np
import pytest

from shared.engine import EngineSettings
from shared.pipeline import SegmentOptions, open_session
from tests.ovmodels import conv_model, identity_model, publish_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Exact numbers in tests: this CPU would otherwise run bf16.
EXACT = dict(precision="f32", threads=2)


@pytest.fixture(scope="session")
def registry_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("registry"))
    publish_model(identity_model(), root, "identity")
    publish_model(conv_model(), root, "conv")
    return root


@pytest.fixture(scope="session")
def make_session(registry_root):
    """open_session with f32 inference on a test model: make_session('identity', tile=224, ...)."""
    def make(model="identity", batch=4, **options):
        return open_session(model, SegmentOptions(**options), EngineSettings(batch=batch, **EXACT),
                            registry_root)
    return make


def textured(height, width, seed=0, channels=3, dtype=np.uint8) -> np.ndarray:
    """A smooth random image with some texture (not a flat field)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // 16), max(2, width // 16), channels)).astype(np.float32)
    img = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255)
    if dtype == np.uint16:
        return (img * 257).astype(np.uint16).squeeze()
    return img.astype(np.uint8).squeeze()
