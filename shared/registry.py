"""The model registry: versioned OpenVINO models in a folder or under an S3 prefix.

Layout (DESIGN.md):
    <root>/<name>/<version>/model.xml, model.bin, manifest.json
    <root>/<name>/latest            text file holding the version `latest` resolves to

A model reference is one of:
    "name"              -> name's latest version in the registry root
    "name:version"      -> that version ("name:latest" is the same as "name")
    a path to a version folder, or to a model.xml beside a manifest.json: a reference is
    taken as a path only if it has a path separator or ends in .xml ("./m" for a folder m
    in the current directory), so a folder named like a model never shadows the registry
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
    if not _NAME.fullmatch(value or ""):
        raise ModelError(f"invalid model {kind} {value!r}: use letters, digits, '.', '_', '-'")
    return value


def _is_s3(root: str) -> bool:
    return root.startswith("s3://")


def _store(root: str):
    from .storage import open_storage
    return open_storage(root)


def latest_version(root: str, name: str) -> str:
    """The version `name` resolves to. A storage outage (TransientStorageError) propagates:
    callers retry it; only a pointer that is not there is a ModelError."""
    from .errors import StorageError, TransientStorageError
    key = f"{_check_name('name', name)}/latest"
    try:
        raw = _store(root).read(key)
    except TransientStorageError:
        raise
    except StorageError:
        raise ModelError(f"model {name!r} not found in registry {root} (no {name}/latest)") from None
    try:
        version = raw.decode().strip()
    except UnicodeDecodeError:
        raise ModelError(f"{_join(root, key)}: not a version (not text)") from None
    return _check_name("version", version)


def _join(root: str, key: str) -> str:
    return root.rstrip("/") + "/" + key if _is_s3(root) else os.path.join(root, key)


def _parse_manifest(data: bytes, where: str) -> dict:
    """A manifest's JSON object, or a ModelError naming where it came from and what is wrong."""
    try:
        manifest = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"{where}: unreadable manifest (not JSON: {exc})") from None
    if not isinstance(manifest, dict):
        raise ModelError(f"{where}: unreadable manifest (a JSON {type(manifest).__name__}, not an object)")
    if not isinstance(manifest.get("files", {}), dict):
        raise ModelError(f"{where}: unreadable manifest (its 'files' is not an object)")
    return manifest


def _cache_root() -> str:
    return os.environ.get("DUSTSPOT_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "dustspot"))


def _fetch(root: str, name: str, version: str) -> str:
    """Download a version from an S3 registry into the local cache; returns the folder."""
    from .errors import StorageError, TransientStorageError
    bucket_prefix = root[len("s3://"):].strip("/").replace("/", "_")
    folder = os.path.join(_cache_root(), "models", bucket_prefix, name, version)
    store = _store(root)
    key = f"{name}/{version}/manifest.json"
    try:
        data = store.read(key)
    except TransientStorageError:
        raise                                   # an outage, not a missing model: retried
    except StorageError:
        raise ModelError(f"model {name}:{version} not found in registry {root}") from None
    manifest = _parse_manifest(data, _join(root, key))
    os.makedirs(folder, exist_ok=True)
    for fname in MODEL_FILES:
        path = os.path.join(folder, fname)
        if not (os.path.exists(path) and sha256_of(path) == manifest.get("files", {}).get(fname)):
            try:
                data = store.read(f"{name}/{version}/{fname}")
            except TransientStorageError:
                raise
            except StorageError as exc:
                raise ModelError(f"model {name}:{version} in {root} is incomplete: {exc}") from None
            _write_atomic(path, data)
    _write_atomic(os.path.join(folder, "manifest.json"), json.dumps(manifest, indent=2, sort_keys=True).encode())
    return folder


def _write_atomic(path: str, data: bytes) -> None:
    """Several workers on a host share the cache: each writes its own temporary file."""
    import tempfile

    from .storage import _umask
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix="." + os.path.basename(path) + ".", suffix=".part")
    try:
        os.fchmod(fd, 0o666 & ~_umask())        # as open() would: mkstemp makes 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _load_folder(folder: str, verify: bool) -> ModelHandle:
    manifest_path = os.path.join(folder, "manifest.json")
    try:
        with open(manifest_path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ModelError(f"{folder}: no manifest.json") from None
    except OSError as exc:
        raise ModelError(f"{manifest_path}: unreadable manifest ({exc.strerror or exc})") from None
    manifest = _parse_manifest(data, manifest_path)
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
    if is_path(ref):
        if ref.endswith(".xml") and os.path.isfile(ref):
            return _load_folder(os.path.dirname(os.path.abspath(ref)), verify)
        if os.path.isdir(ref):
            return _load_folder(os.path.abspath(ref), verify)
        if not _NAME.fullmatch(ref.partition(":")[0]):
            raise ModelError(f"invalid model name {ref!r}, and no such model folder or model.xml either")
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


def is_path(ref: str) -> bool:
    """A reference names a folder or file only if it has a path separator or ends in .xml."""
    return ("/" in ref or os.sep in ref or (os.altsep or "/") in ref or ref.endswith(".xml")
            or ref in (".", ".."))


def list_models(root: str | None = None, skipped: list | None = None) -> list[dict]:
    """One row per version: name, version, precision, created, whether it is latest.

    A version whose manifest cannot be read or parsed is left out; its ModelError goes into
    `skipped` when a list is given. A registry that cannot be listed at all (a missing
    bucket, access denied) is a ModelError; an outage is a TransientStorageError.
    """
    from .errors import StorageError, TransientStorageError
    root = root or defaults.models_root()
    if not _is_s3(root) and not os.path.isdir(root):
        return []
    store = _store(root)
    try:
        keys = store.list()
    except TransientStorageError:
        raise
    except StorageError as exc:
        raise ModelError(f"cannot list registry {root}: {exc}") from None
    versions = sorted(tuple(k.split("/")[:2]) for k in keys
                      if k.count("/") == 2 and k.endswith("/manifest.json") and _NAME.fullmatch(k.split("/")[0])
                      and _NAME.fullmatch(k.split("/")[1]) and not k.split("/")[1].endswith(".partial"))
    rows, latest = [], {}
    for name, version in versions:
        if name not in latest:
            try:
                latest[name] = latest_version(root, name)
            except ModelError:
                latest[name] = None
        key = f"{name}/{version}/manifest.json"
        try:
            m = _parse_manifest(store.read(key), _join(root, key))
        except TransientStorageError:
            raise
        except (ModelError, StorageError) as exc:
            if skipped is not None:
                skipped.append(exc if isinstance(exc, ModelError) else ModelError(str(exc)))
            continue
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
    sources = _sources(model_xml)
    staging = folder + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        os.makedirs(staging)
        shutil.copyfile(sources["model.xml"], os.path.join(staging, "model.xml"))
        shutil.copyfile(sources["model.bin"], os.path.join(staging, "model.bin"))
        full = _full_manifest(manifest, name, version, {f: os.path.join(staging, f) for f in MODEL_FILES})
        with open(os.path.join(staging, "manifest.json"), "w") as f:
            json.dump(full, f, indent=2, sort_keys=True)
        os.rename(staging, folder)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ModelError(f"cannot publish {name}:{version} in {root}: "
                         f"{exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}") from None
    except (TypeError, ValueError) as exc:           # json.dump of fields that are not JSON
        shutil.rmtree(staging, ignore_errors=True)
        raise ModelError(f"cannot publish {name}:{version}: the manifest fields are not JSON ({exc})") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if make_latest:
        promote(root, name, version)
    return _load_folder(folder, verify=True)


def _sources(model_xml: str) -> dict:
    """model.xml and the .bin beside it, both checked to be there before anything is written."""
    sources = {"model.xml": model_xml, "model.bin": os.path.splitext(model_xml)[0] + ".bin"}
    for path in sources.values():
        if not os.path.isfile(path):
            raise ModelError(f"{path}: no such file (an IR is a model.xml and the .bin beside it)")
    return sources


def _full_manifest(manifest: dict, name: str, version: str, paths: dict) -> dict:
    """The descriptive fields plus name, version, created and the sha256 of every file."""
    if not isinstance(manifest, dict):
        raise ModelError(f"the manifest fields must be a JSON object, not a {type(manifest).__name__}")
    full = dict(manifest)
    full.update(name=name, version=version,
                created=full.get("created") or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                files={f: sha256_of(p) for f, p in paths.items()})
    return full


def _publish_s3(root, name, version, model_xml, manifest, make_latest) -> ModelHandle:
    """Upload the files, then the manifest (its presence marks the version complete)."""
    store = _store(root)
    sources = _sources(model_xml)
    try:                                # everything read and checked before the first upload
        full = _full_manifest(manifest, name, version, sources)
        blobs = {}
        for fname, path in sources.items():
            with open(path, "rb") as f:
                blobs[fname] = f.read()
        blobs["manifest.json"] = json.dumps(full, indent=2, sort_keys=True).encode()
    except OSError as exc:
        raise ModelError(f"cannot publish {name}:{version}: {exc.filename or ''}"
                         f"{': ' if exc.filename else ''}{exc.strerror or exc}") from None
    except (TypeError, ValueError) as exc:
        raise ModelError(f"cannot publish {name}:{version}: the manifest fields are not JSON ({exc})") from None
    for fname, data in blobs.items():   # the manifest last: its presence marks the version complete
        store.write(f"{name}/{version}/{fname}", data)
    if make_latest:
        promote(root, name, version)
    return resolve(f"{name}:{version}", root)
