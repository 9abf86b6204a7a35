"""The model registry: versioned OpenVINO models in a folder or under an S3 prefix.

Layout (DESIGN.md):
    <root>/<name>/<version>/model.xml, model.bin, manifest.json
    <root>/<name>/latest            text file holding the version `latest` resolves to

A model reference is one of:
    "name"              -> name's latest version in the registry root
    "name:version"      -> that version ("name:latest" is the same as "name")
    a path to a version folder, or to a model.xml beside a manifest.json
Loading verifies every file against the sha256 in the manifest, so a tampered or
truncated model is refused before it is compiled. From an S3 registry a version is
downloaded once into a local cache (DUSTSPOT_CACHE, default ~/.cache/dustspot) and
verified there; OpenVINO then reads it from disk.
"""
import datetime
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass

from . import defaults
from .errors import ModelError

MODEL_FILES = ("model.xml", "model.bin")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class ModelHandle:
    """A resolved, verified model: where its files are and what its manifest says."""
    name: str
    version: str
    folder: str
    manifest: dict

    @property
    def xml(self) -> str:
        return os.path.join(self.folder, "model.xml")

    @property
    def sha256(self) -> str:
        return self.manifest.get("files", {}).get("model.bin", "")

    def describe(self) -> dict:
        return {"name": self.name, "version": self.version, "sha256": self.sha256,
                "precision": self.manifest.get("precision")}


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_name(kind: str, value: str) -> str:
    if not _NAME.match(value or ""):
        raise ModelError(f"invalid model {kind} {value!r}: use letters, digits, '.', '_', '-'")
    return value


def _is_s3(root: str) -> bool:
    return root.startswith("s3://")


def _store(root: str):
    from .storage import open_storage
    return open_storage(root)


def latest_version(root: str, name: str) -> str:
    from .errors import StorageError
    key = f"{_check_name('name', name)}/latest"
    try:
        return _check_name("version", _store(root).read(key).decode().strip())
    except StorageError:
        raise ModelError(f"model {name!r} not found in registry {root} (no {name}/latest)") from None


def _cache_root() -> str:
    return os.environ.get("DUSTSPOT_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "dustspot"))


def _fetch(root: str, name: str, version: str) -> str:
    """Download a version from an S3 registry into the local cache; returns the folder."""
    from .errors import StorageError
    bucket_prefix = root[len("s3://"):].strip("/").replace("/", "_")
    folder = os.path.join(_cache_root(), "models", bucket_prefix, name, version)
    store = _store(root)
    try:
        manifest = json.loads(store.read(f"{name}/{version}/manifest.json"))
    except StorageError:
        raise ModelError(f"model {name}:{version} not found in registry {root}") from None
    os.makedirs(folder, exist_ok=True)
    for fname in MODEL_FILES:
        path = os.path.join(folder, fname)
        if not (os.path.exists(path) and sha256_of(path) == manifest.get("files", {}).get(fname)):
            _write_atomic(path, store.read(f"{name}/{version}/{fname}"))
    _write_atomic(os.path.join(folder, "manifest.json"), json.dumps(manifest, indent=2, sort_keys=True).encode())
    return folder


def _write_atomic(path: str, data: bytes) -> None:
    """Several workers on a host share the cache: each writes its own temporary file."""
    import tempfile
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix="." + os.path.basename(path) + ".", suffix=".part")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _load_folder(folder: str, verify: bool) -> ModelHandle:
    manifest_path = os.path.join(folder, "manifest.json")
    try:
        with open(manifest_path) as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise ModelError(f"{folder}: no manifest.json") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{manifest_path}: unreadable manifest ({exc})") from None
    if verify:
        expected = manifest.get("files", {})
        for fname in MODEL_FILES:
            path = os.path.join(folder, fname)
            if fname not in expected:
                raise ModelError(f"{manifest_path}: no sha256 for {fname}")
            if not os.path.exists(path):
                raise ModelError(f"{path}: missing")
            if sha256_of(path) != expected[fname]:
                raise ModelError(f"{path}: sha256 does not match the manifest (tampered or corrupt)")
    return ModelHandle(manifest.get("name", os.path.basename(os.path.dirname(folder))),
                       str(manifest.get("version", os.path.basename(folder))), folder, manifest)


def resolve(ref: str | None = None, root: str | None = None, verify: bool = True) -> ModelHandle:
    """Turn a model reference into a verified ModelHandle."""
    ref = ref or defaults.MODEL
    root = root or defaults.models_root()
    if os.path.isdir(ref):
        return _load_folder(os.path.abspath(ref), verify)
    if ref.endswith(".xml") and os.path.isfile(ref):
        return _load_folder(os.path.dirname(os.path.abspath(ref)), verify)
    name, _, version = ref.partition(":")
    _check_name("name", name)
    if not version or version == "latest":
        version = latest_version(root, name)
    _check_name("version", version)
    if _is_s3(root):
        if not verify:                      # a version check only (workers, between jobs)
            return ModelHandle(name, version, "", {})
        return _load_folder(_fetch(root, name, version), verify)
    folder = os.path.join(root, name, version)
    if not os.path.isdir(folder):
        raise ModelError(f"model {name}:{version} not found in registry {root}")
    return _load_folder(folder, verify)


def list_models(root: str | None = None) -> list[dict]:
    """One row per version: name, version, precision, created, whether it is latest."""
    root = root or defaults.models_root()
    if not _is_s3(root) and not os.path.isdir(root):
        return []
    store = _store(root)
    versions = sorted(tuple(k.split("/")[:2]) for k in store.list()
                      if k.count("/") == 2 and k.endswith("/manifest.json") and _NAME.match(k.split("/")[0]))
    rows, latest = [], {}
    for name, version in versions:
        if name not in latest:
            try:
                latest[name] = latest_version(root, name)
            except ModelError:
                latest[name] = None
        m = json.loads(store.read(f"{name}/{version}/manifest.json"))
        rows.append({"name": name, "version": version, "precision": m.get("precision"),
                     "created": m.get("created"), "latest": version == latest[name]})
    return rows


def promote(root: str, name: str, version: str) -> None:
    """Point `latest` at a version (atomically: readers see the old or the new pointer)."""
    store = _store(root)
    if not store.exists(f"{_check_name('name', name)}/{_check_name('version', version)}/manifest.json"):
        raise ModelError(f"cannot promote {name}:{version}: not in registry {root}")
    store.write(f"{name}/latest", (version + "\n").encode())


def publish(root: str, name: str, version: str, model_xml: str, manifest: dict,
            make_latest: bool = True) -> ModelHandle:
    """Copy an IR (model.xml + its .bin) into the registry with a manifest of its hashes.

    `manifest` carries the descriptive fields (architecture, input, precision, training,
    metrics, parent...); name, version, created and files are filled in here.
    """
    store = _store(root)
    if store.exists(f"{_check_name('name', name)}/{_check_name('version', version)}/manifest.json"):
        raise ModelError(f"{name}:{version} already exists in {root}; versions are immutable")
    if _is_s3(root):
        return _publish_s3(root, name, version, model_xml, manifest, make_latest)
    folder = os.path.join(root, name, version)
    if os.path.exists(folder):
        raise ModelError(f"{name}:{version} already exists in {root}; versions are immutable")
    staging = folder + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    shutil.copyfile(model_xml, os.path.join(staging, "model.xml"))
    shutil.copyfile(os.path.splitext(model_xml)[0] + ".bin", os.path.join(staging, "model.bin"))
    full = _full_manifest(manifest, name, version, {f: os.path.join(staging, f) for f in MODEL_FILES})
    with open(os.path.join(staging, "manifest.json"), "w") as f:
        json.dump(full, f, indent=2, sort_keys=True)
    os.rename(staging, folder)
    if make_latest:
        promote(root, name, version)
    return _load_folder(folder, verify=True)


def _full_manifest(manifest: dict, name: str, version: str, paths: dict) -> dict:
    """The descriptive fields plus name, version, created and the sha256 of every file."""
    full = dict(manifest)
    full.update(name=name, version=version,
                created=full.get("created") or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                files={f: sha256_of(p) for f, p in paths.items()})
    return full


def _publish_s3(root, name, version, model_xml, manifest, make_latest) -> ModelHandle:
    """Upload the files, then the manifest (its presence marks the version complete)."""
    store = _store(root)
    sources = {"model.xml": model_xml, "model.bin": os.path.splitext(model_xml)[0] + ".bin"}
    full = _full_manifest(manifest, name, version, sources)
    for fname, path in sources.items():
        with open(path, "rb") as f:
            store.write(f"{name}/{version}/{fname}", f.read())
    store.write(f"{name}/{version}/manifest.json", json.dumps(full, indent=2, sort_keys=True).encode())
    if make_latest:
        promote(root, name, version)
    return resolve(f"{name}:{version}", root)
