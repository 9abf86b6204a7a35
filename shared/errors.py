"""The exceptions dustspot raises on purpose. Each names the thing that failed and why."""


class DustspotError(Exception):
    """Base class: an error with a message meant for the user."""


class ImageError(DustspotError):
    """A scan cannot be used: not an image, corrupt, truncated, too large, unsupported.

    Permanent: retrying the same file gives the same answer.
    """

    def __init__(self, source: str, reason: str):
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")


class ModelError(DustspotError):
    """A model cannot be found, verified or compiled."""


class StorageError(DustspotError):
    """Reading or writing a URI failed for good (missing, access denied, not writable)."""


class TransientStorageError(StorageError):
    """A storage failure that may pass (network, throttling, server error): retry later."""


class ProcessingError(DustspotError):
    """Processing a scan failed in a way the code did not foresee (a bug, or a resource limit).

    Raised in place of the original exception (chained to it) so that every caller that handles
    DustspotError, the CLI summary and the worker, records it against the scan and goes on.
    """

    def __init__(self, source: str, exc: BaseException):
        self.source = str(source)
        super().__init__(f"{self.source}: internal error ({type(exc).__name__}: {exc})")


class PathError(DustspotError):
    """A path or relative name is not allowed (outside the allowed roots, `..`, absolute)."""
