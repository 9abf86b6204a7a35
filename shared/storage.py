"""Where scans come from and results go: one small interface over URIs.

A URI is a local path (or file://...) or s3://bucket/key. S3 goes through boto3 with its
standard configuration (AWS_* variables, AWS_ENDPOINT_URL for S3-compatible stores) and
botocore's retries with backoff; what still fails is classed as transient (network,
throttling, 5xx: worth retrying later) or permanent (missing key, access denied).
Writes are atomic: locally bytes go to a temporary name beside the target, then a rename;
an S3 PUT is atomic by itself. No reader ever sees a half-written result.
"""
import errno
import fcntl
import hashlib
import os
import posixpath
import tempfile
import time

from . import defaults
from .errors import PathError, StorageError, TransientStorageError


# The most bytes one read loads into memory: an uncompressed scan at the pixel limit
# (16-bit RGBA: 8 bytes a pixel) plus room for headers and metadata. A larger object is
# refused from its size, before any of it is read (a hostile or mistaken huge upload).
def read_limit(max_pixels: int) -> int:
    return max_pixels * 8 + (64 << 20)


MAX_READ_BYTES = read_limit(defaults.MAX_PIXELS)
# A temporary .part file this old is a leftover of a dead writer even where file locks do
# not work (writes are whole byte strings in memory: none takes anywhere near this long).
STALE_PART_AGE_S = 3600
# A file name's limit on common file systems (NAME_MAX); mkstemp adds 8 random characters.
NAME_MAX_BYTES = 255
_PART_EXTRA_BYTES = len("." + "." + "12345678" + ".part")


def _part_prefix(name: str) -> str:
    """The temporary-file prefix for target `name`: '.NAME.', or for a name too long to take
    the extra bytes, its first bytes and a hash of the whole (still one prefix per name, so
    _remove_stale_parts finds its leftovers)."""
    raw = os.fsencode(name)             # the bytes on disk (undecodable names included)
    if len(raw) + _PART_EXTRA_BYTES <= NAME_MAX_BYTES:
        return "." + name + "."
    digest = hashlib.sha1(raw).hexdigest()[:16]
    head = os.fsdecode(raw[:NAME_MAX_BYTES - _PART_EXTRA_BYTES - len(digest) - 1])
    while head and not name.startswith(head):
        head = head[:-1]                # a cut inside a character: keep whole characters
    return "." + head + "~" + digest + "."


def safe_relative(name: str) -> str:
    """Validate a relative name used to place outputs; returned unchanged.

    Refused (PathError), never rewritten: absolute names, `..`, `.` and empty segments
    ('a//b', 'a/'), NUL.  A backslash is an ordinary character, as in S3 keys and Linux file
    names: 'sub\\b.png' is that file (or key), never 'sub/b.png'.
    """
    if not name or "\x00" in name:
        raise PathError(f"invalid relative name {name!r}")
    if name.startswith("/"):
        raise PathError(f"relative name {name!r} escapes its root (an absolute name)")
    if any(part == ".." for part in name.split("/")):
        raise PathError(f"relative name {name!r} escapes its root")
    if any(part in ("", ".") for part in name.split("/")):
        raise PathError(f"relative name {name!r} has an empty or '.' path segment")
    return name


def _too_large(uri: str, size: int, limit: int) -> StorageError:
    return StorageError(f"{uri}: cannot read ({size} bytes, over the limit of {limit} bytes)")


def _umask() -> int:
    """The process umask, read without changing it (os.umask would race other threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def printable(text) -> str:
    """Any str as text that encodes to UTF-8: safe to print and to store (Redis, JSON, logs).

    File names on Linux may be any bytes: those smuggled in as surrogate escapes (os.fsdecode)
    come out as \\xNN, other lone surrogates as \\udNNN.
    """
    text = str(text)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def allowed_roots() -> list[str]:
    """DUSTSPOT_ALLOWED_ROOTS: comma-separated folders and s3://bucket[/prefix]; empty = any."""
    raw = os.environ.get("DUSTSPOT_ALLOWED_ROOTS", "")
    return [r.strip() for r in raw.split(",") if r.strip()]


def check_allowed(uri: str, roots: list[str]) -> None:
    """Refuse a URI outside the allowed roots (symlinks resolved for local paths)."""
    if not roots:
        return
    if uri.startswith("s3://"):
        if any(uri == r.rstrip("/") or uri.startswith(r.rstrip("/") + "/") for r in roots if r.startswith("s3://")):
            return
    else:
        path = os.path.realpath(uri[len("file://"):] if uri.startswith("file://") else uri)
        for root in roots:
            if not root.startswith("s3://"):
                real = os.path.realpath(root)
                if path == real or path.startswith(real.rstrip(os.sep) + os.sep):
                    return
    raise PathError(f"{uri}: outside the allowed roots (DUSTSPOT_ALLOWED_ROOTS)")


def output_stem(relative_name: str) -> str:
    """'a/b.tif' -> 'a/b': outputs are <stem>.mask.png, <stem>.json, ..."""
    return posixpath.splitext(safe_relative(relative_name))[0]


def claim_outputs(owners: dict, relative_name: str, source: str) -> str | None:
    """Record in `owners` (stem -> source) that `source` writes its stem's outputs; or, when an
    earlier scan already does (x.png and x.tif both write x.mask.png and x.json), return why
    this one may not: it is refused rather than left to overwrite the other's outputs."""
    stem = output_stem(relative_name)
    if stem in owners:
        return (f"not processed: its outputs ({stem}.mask.png, {stem}.json) would overwrite "
                f"those of {printable(owners[stem])}; give it a folder of its own")
    owners[stem] = source
    return None


class Storage:
    """Read and write bytes by key under a root URI."""
    root: str

    def read(self, key: str, max_bytes: int = MAX_READ_BYTES) -> bytes:
        """The object's bytes; StorageError, before reading, if it is over max_bytes."""
        raise NotImplementedError

    def write(self, key: str, data: bytes) -> str:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Remove the object; a missing one is not an error."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def list(self, prefix: str = ""):
        """Every key under root/prefix, recursively, relative to root, in sorted order."""
        raise NotImplementedError

    def local_path(self, key: str) -> str | None:
        """A filesystem path for `key` if it has one (decoders then read it directly)."""
        return None

    def uri(self, key: str) -> str:
        return posixpath.join(self.root, key) if key else self.root


class LocalStorage(Storage):
    @staticmethod
    def _remove_stale_parts(folder: str, name: str) -> None:
        """Temporary files of earlier writes of the same key left by a writer that died.

        A live writer holds an exclusive lock on its .part file from creation to rename, so
        a part we can lock has no writer any more; where locks are not supported only a part
        older than STALE_PART_AGE_S is taken for dead. A part in progress is never removed.
        """
        import glob
        for stale in glob.glob(os.path.join(glob.escape(folder), glob.escape(_part_prefix(name)) + "*.part")):
            try:
                fd = os.open(stale, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue                              # renamed or removed meanwhile
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        continue                      # a writer is at work on it
                    if time.time() - os.fstat(fd).st_mtime < STALE_PART_AGE_S:
                        continue                      # no locks here: only an old part is dead
                if os.stat(stale, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                    os.unlink(stale)
            except OSError:
                pass
            finally:
                os.close(fd)

    def __init__(self, root: str):
        self.root = root[len("file://"):] if root.startswith("file://") else root

    def _path(self, key: str) -> str:
        return os.path.join(self.root, safe_relative(key)) if key else self.root

    def local_path(self, key):
        return self._path(key)

    def uri(self, key):
        return self._path(key)

    def read(self, key, max_bytes: int = MAX_READ_BYTES):
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size > max_bytes:
                    raise _too_large(path, size, max_bytes)
                data = f.read(max_bytes + 1)
        except OSError as exc:
            raise StorageError(f"{path}: cannot read ({exc.strerror or exc})") from None
        if len(data) > max_bytes:                     # grew while we read it
            raise _too_large(path, len(data), max_bytes)
        return data

    def exists(self, key):
        return os.path.exists(self._path(key))

    def list(self, prefix=""):
        top = self._path(prefix)
        if os.path.isfile(top):
            return [safe_relative(prefix)]
        keys = []
        for folder, dirs, files in os.walk(top):
            dirs.sort()
            for name in files:
                keys.append(os.path.relpath(os.path.join(folder, name), self.root).replace(os.sep, "/"))
        return sorted(keys)

    def write(self, key, data):
        path = self._path(key)
        folder = os.path.dirname(path) or "."
        tmp = None
        try:
            os.makedirs(folder, exist_ok=True)
            fd, tmp = self._locked_part(folder, os.path.basename(path))
            # The permissions an ordinary open() would give (mkstemp makes 0600): other users
            # and workers running as another uid read masks, reports and `latest` pointers.
            os.fchmod(fd, 0o666 & ~_umask())
            with os.fdopen(fd, "wb") as f:          # the lock goes with the descriptor: held
                f.write(data)                       # until the part has its final name
                f.flush()
                os.fsync(f.fileno())
                os.replace(tmp, path)
            self._remove_stale_parts(folder, os.path.basename(path))
            return path
        except OSError as exc:
            if tmp and os.path.exists(tmp):
                os.unlink(tmp)
            raise StorageError(f"{path}: cannot write ({exc.strerror or exc})") from None

    def delete(self, key):
        path = self._path(safe_relative(key))        # never the root itself
        try:
            os.unlink(path)                           # a symlink: the link, never its target
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno != errno.ENOTDIR:            # a parent is a file: nothing there either
                raise StorageError(f"{path}: cannot delete ({exc.strerror or exc})") from None

    @staticmethod
    def _locked_part(folder: str, name: str) -> tuple[int, str]:
        """A new temporary file beside the target, exclusively locked (see _remove_stale_parts)."""
        for _ in range(10):
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=_part_prefix(name), suffix=".part")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                    os.close(fd)
                    raise
                return fd, tmp                      # no locks here: the age rule protects it
            # Between mkstemp and the lock another writer may have taken it for dead.
            if os.fstat(fd).st_nlink > 0:
                return fd, tmp
            os.close(fd)
        raise OSError(errno.EAGAIN, "could not create a temporary file")


_S3_CLIENTS = {}
# Retrying these cannot help: the key is not there or these credentials may not have it.
_PERMANENT_S3_CODES = {"NoSuchKey", "NoSuchBucket", "404", "NotFound", "AccessDenied", "403",
                       "InvalidObjectState", "AllAccessDisabled", "InvalidBucketName",
                       "InvalidAccessKeyId", "SignatureDoesNotMatch", "KeyTooLongError", "PermanentRedirect", "301"}


def s3_client():
    """One boto3 client per process (clients are thread-safe but must not cross a fork)."""
    key = (os.getpid(), os.environ.get("AWS_ENDPOINT_URL"))     # a changed endpoint: a new client
    if key not in _S3_CLIENTS:
        import boto3
        from botocore.config import Config
        config = Config(retries={"max_attempts": 6, "mode": "standard"},
                        connect_timeout=5, read_timeout=60)
        _S3_CLIENTS.clear()
        _S3_CLIENTS[key] = boto3.client("s3", config=config)
    return _S3_CLIENTS[key]


# 4xx answers that may pass: a timeout, throttling, a clock that was off.
_TRANSIENT_S3_CODES = {"RequestTimeout", "SlowDown", "Throttling", "ThrottlingException", "TooManyRequests",
                       "RequestLimitExceeded", "RequestTimeTooSkewed"}


def _s3_error(uri: str, action: str, exc: Exception) -> StorageError:
    """Permanent (fail the job now) or transient (retry): by S3's error code, else by HTTP status
    (4xx permanent but 408 and 429, 5xx and no answer at all transient)."""
    from botocore.exceptions import (
        ClientError,
        NoCredentialsError,
        ParamValidationError,
    )
    if isinstance(exc, NoCredentialsError):      # configuration, not an outage: no retrying
        _S3_CLIENTS.clear()                      # but the next job looks again (an instance role may answer late)
        return StorageError(f"{uri}: cannot {action} (no AWS credentials found)")
    if isinstance(exc, ParamValidationError):    # refused by botocore before sending (a bad bucket name)
        return StorageError(f"{uri}: cannot {action} ({printable(str(exc))})")
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _PERMANENT_S3_CODES:
            reason = "not found" if code in ("NoSuchKey", "404", "NotFound", "NoSuchBucket") else f"{code}"
            return StorageError(f"{uri}: cannot {action} ({reason})")
        client_fault = isinstance(status, int) and 400 <= status < 500 and status not in (408, 429)
        if client_fault and code not in _TRANSIENT_S3_CODES:
            return StorageError(f"{uri}: cannot {action} ({code or status})")
        return TransientStorageError(f"{uri}: cannot {action} ({code or exc})")
    return TransientStorageError(f"{uri}: cannot {action} ({type(exc).__name__}: {exc})")


class S3Storage(Storage):
    def __init__(self, root: str):
        bucket, _, prefix = root[len("s3://"):].partition("/")
        if not bucket:
            raise PathError(f"{root}: no bucket in S3 URI")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.root = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"

    def _key(self, key):
        key = safe_relative(key) if key else ""
        return posixpath.join(self.prefix, key) if self.prefix and key else (key or self.prefix)

    def uri(self, key):
        return f"s3://{self.bucket}/{self._key(key)}"

    def read(self, key, max_bytes: int = MAX_READ_BYTES):
        try:
            response = s3_client().get_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            raise _s3_error(self.uri(key), "read", exc) from None
        body = response["Body"]
        try:
            size = response.get("ContentLength")
            if size is not None and size > max_bytes:
                raise _too_large(self.uri(key), size, max_bytes)
            data = body.read(max_bytes + 1)
        except StorageError:
            raise
        except Exception as exc:
            raise _s3_error(self.uri(key), "read", exc) from None
        finally:
            body.close()                              # an unread rest is dropped, not downloaded
        if len(data) > max_bytes:
            raise _too_large(self.uri(key), len(data), max_bytes)
        return data

    def write(self, key, data):
        try:
            s3_client().put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
            return self.uri(key)
        except Exception as exc:
            raise _s3_error(self.uri(key), "write", exc) from None

    def delete(self, key):
        safe_relative(key)                            # never the prefix itself
        try:                                          # S3 answers a missing key with success
            s3_client().delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            raise _s3_error(self.uri(key), "delete", exc) from None

    def exists(self, key):
        from botocore.exceptions import ClientError
        try:
            s3_client().head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise _s3_error(self.uri(key), "check", exc) from None
        except Exception as exc:
            raise _s3_error(self.uri(key), "check", exc) from None

    def list(self, prefix=""):
        full = self._key(prefix)
        if full and not full.endswith("/"):
            full += "/"
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys = []
        try:
            pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full)
            for page in pages:                     # 1,000 keys a page
                keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        except Exception as exc:
            raise _s3_error(self.uri(prefix), "list", exc) from None
        return sorted(keys)


def locate(uri: str) -> tuple[Storage, str]:
    """A storage and key for one object's URI (its folder or bucket is the storage root)."""
    if uri.startswith("s3://"):
        bucket, _, key = uri[len("s3://"):].partition("/")
        return open_storage(f"s3://{bucket}"), key
    return open_storage(os.path.dirname(uri) or "."), os.path.basename(uri)


def read_uri(uri: str, max_bytes: int = MAX_READ_BYTES) -> bytes:
    storage, key = locate(uri)
    return storage.read(key, max_bytes)


def open_storage(root: str) -> Storage:
    if root.startswith("s3://"):
        return S3Storage(root)
    return LocalStorage(root)
