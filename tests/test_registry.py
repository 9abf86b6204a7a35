"""Model registry: publish, resolve by name/version/path, latest pointer, hash verification."""
import json
import os

import pytest

from shared import registry
from shared.engine import EngineSettings, load_engine
from shared.errors import ModelError
from tests.ovmodels import conv_model, publish_model


def test_publish_resolve_promote(tmp_path):
    root = str(tmp_path)
    publish_model(conv_model(seed=1), root, "m", "1.0")
    publish_model(conv_model(seed=2), root, "m", "1.1")
    assert registry.resolve("m", root).version == "1.1"              # publish makes latest
    assert registry.resolve("m:1.0", root).version == "1.0"
    registry.promote(root, "m", "1.0")
    assert registry.resolve("m:latest", root).version == "1.0"
    folder = os.path.join(root, "m", "1.1")
    assert registry.resolve(folder).version == "1.1"
    assert registry.resolve(os.path.join(folder, "model.xml")).version == "1.1"
    manifest = json.load(open(os.path.join(folder, "manifest.json")))
    assert set(manifest["files"]) == {"model.xml", "model.bin"}
    assert [r["latest"] for r in registry.list_models(root)] == [True, False]
    with pytest.raises(ModelError, match="immutable"):
        publish_model(conv_model(), root, "m", "1.0")


def test_tampered_model_is_refused_before_compiling(tmp_path):
    root = str(tmp_path)
    handle = publish_model(conv_model(), root, "m")
    with open(os.path.join(handle.folder, "model.bin"), "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(ModelError, match="sha256 does not match"):
        load_engine("m", EngineSettings(tile=64), root)


@pytest.mark.parametrize("ref,message", [("nope", "not found"), ("m:9", "not found"), ("../x", "invalid model name")])
def test_unknown_or_hostile_references(tmp_path, ref, message):
    publish_model(conv_model(), str(tmp_path), "m")
    with pytest.raises(ModelError, match=message):
        registry.resolve(ref, str(tmp_path))
