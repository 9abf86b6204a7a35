"""Where scans come from and results go: one small interface over URIs.

A URI is a local path (or file://...). S3 (s3://bucket/key) joins it in the queue work.
Writes are atomic: bytes go to a temporary name beside the target, then a rename, so a
reader (or a crash) never sees a half-written result under its final name.
"""
import os
import posixpath
import tempfile

from .errors import PathError, StorageError


def safe_relative(name: str) -> str:
    """Validate a relative name used to place outputs: no absolute paths, no `..`."""
    if not name or "\x00" in name:
        raise PathError(f"invalid relative name {name!r}")
    norm = name.replace("\\", "/")
    if norm.startswith("/") or any(part == ".." for part in norm.split("/")):
        raise PathError(f"relative name {name!r} escapes its root")
    return posixpath.normpath(norm)


def output_stem(relative_name: str) -> str:
    """'a/b.tif' -> 'a/b': outputs are <stem>.mask.png, <stem>.json, ..."""
    return posixpath.splitext(safe_relative(relative_name))[0]


class Storage:
    """Read and write bytes by key under a root URI."""
    root: str

    def read(self, key: str) -> bytes:
        raise NotImplementedError

    def write(self, key: str, data: bytes) -> str:
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def local_path(self, key: str) -> str | None:
        """A filesystem path for `key` if it has one (decoders then read it directly)."""
        return None

    def uri(self, key: str) -> str:
        return posixpath.join(self.root, key) if key else self.root


class LocalStorage(Storage):
    def __init__(self, root: str):
        self.root = root[len("file://"):] if root.startswith("file://") else root

    def _path(self, key: str) -> str:
        return os.path.join(self.root, safe_relative(key)) if key else self.root

    def local_path(self, key):
        return self._path(key)

    def uri(self, key):
        return self._path(key)

    def read(self, key):
        try:
            with open(self._path(key), "rb") as f:
                return f.read()
        except OSError as exc:
            raise StorageError(f"{self._path(key)}: cannot read ({exc.strerror or exc})") from None

    def exists(self, key):
        return os.path.exists(self._path(key))

    def write(self, key, data):
        path = self._path(key)
        folder = os.path.dirname(path) or "."
        tmp = None
        try:
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".part")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            return path
        except OSError as exc:
            if tmp and os.path.exists(tmp):
                os.unlink(tmp)
            raise StorageError(f"{path}: cannot write ({exc.strerror or exc})") from None


def open_storage(root: str) -> Storage:
    if root.startswith("s3://"):
        raise StorageError(f"{root}: S3 storage is not available in this version")
    return LocalStorage(root)
