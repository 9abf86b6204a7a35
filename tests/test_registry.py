"""Model registry: publish, resolve by name/version/path, latest pointer, hash verification."""
import json
import os
import subprocess
import sys

import pytest

from shared import registry
from shared.engine import EngineSettings, load_engine
from shared.errors import ModelError
from tests.ovmodels import conv_model, publish_model
from tests.services import s3_endpoint  # noqa: F401 (fixture)


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


def test_s3_registry_publish_resolve_and_tamper(tmp_path, s3_endpoint, monkeypatch):
    """The same registry on an S3 prefix: versions are fetched into a local cache and verified."""
    import boto3
    monkeypatch.setenv("DUSTSPOT_CACHE", str(tmp_path / "cache"))
    boto3.client("s3").create_bucket(Bucket="models")
    root = "s3://models/registry"
    local = publish_model(conv_model(seed=3), str(tmp_path / "local"), "m", "1")
    cli = [sys.executable, "-m", "shared.cli", "models", "--registry", root]
    res = subprocess.run([*cli, "publish", local.xml, "--name", "m", "--version", "1",
                          "--manifest", os.path.join(local.folder, "manifest.json")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    handle = registry.resolve("m", root)
    assert handle.version == "1" and handle.folder.startswith(str(tmp_path / "cache"))
    assert handle.sha256 == local.sha256
    engine, _ = load_engine("m", EngineSettings(tile=64), root)
    assert engine.info["name"] == "m"
    listing = subprocess.run([*cli, "list"], capture_output=True, text=True, timeout=60).stdout
    assert "* m:1" in listing
    # A damaged cached copy is fetched again and verified.
    with open(os.path.join(handle.folder, "model.bin"), "r+b") as f:
        f.write(b"\x00" * 16)
    assert registry.resolve("m", root).sha256 == local.sha256
    # Someone rewrites the weights in the bucket: a host without a good cached copy refuses them.
    boto3.client("s3").put_object(Bucket="models", Key="registry/m/1/model.bin", Body=b"not the weights")
    monkeypatch.setenv("DUSTSPOT_CACHE", str(tmp_path / "cache-of-another-host"))
    with pytest.raises(ModelError, match="sha256 does not match"):
        registry.resolve("m", root)
