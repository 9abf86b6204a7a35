"""The job contract between producer and workers: a JSON payload, never pickle.

A payload names one scan: where it is (source URI), where its outputs go (destination
root + relative name), which model and options, and the batch it belongs to. Job ids
are derived from batch and source, so enqueueing the same batch again finds the jobs
it already made instead of duplicating them.
"""
import hashlib
import os
import re
from dataclasses import asdict, dataclass, field, fields

from . import defaults
from .errors import DustspotError
from .option_rules import OptionError, check_option_values
from .storage import printable, safe_relative

QUEUE = "dustspot"
JOB_FUNCTION = "worker.job.segment_job"
_BATCH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
# Pipeline options a job may set (SegmentOptions fields); anything else is refused.
JOB_OPTIONS = ("mode", "working_size", "tile", "overlap", "threshold", "spot_threshold", "min_area", "trim", "neutral", "overlay",
               "prob", "inpaint", "max_pixels")


def check_options(options) -> dict:
    """Types and ranges of a job's pipeline options; PayloadError naming the first bad one."""
    if not isinstance(options, dict) or set(options) - set(JOB_OPTIONS):
        raise PayloadError(f"payload options may only set {', '.join(JOB_OPTIONS)}")
    try:
        check_option_values(options)
    except OptionError as exc:
        raise PayloadError(f"job {exc}") from None      # "job option NAME=VALUE: must be ..."
    check_working_size(options.get("mode"), options.get("working_size"),
                       options.get("max_pixels") or defaults.MAX_PIXELS)
    return options


def check_working_size(mode, working_size, max_pixels: int) -> None:
    """A working image must stay within the pixel limit, as the scans themselves do."""
    if working_pixels(mode, working_size) > max_pixels:
        raise PayloadError(f"job option working_size={working_size}: a {working_size} x {working_size} "
                           f"working image exceeds the pixel limit ({max_pixels} pixels)")


def working_pixels(mode, working_size) -> int:
    """Pixels of the working image a job asks for (0 in native mode: the scan's own size applies)."""
    return 0 if mode == "native" or working_size is None else working_size * working_size


class PayloadError(DustspotError):
    """A job payload that is not what a dustspot producer writes."""


def check_root(field_name: str, uri: str) -> str:
    """A payload's source or dest: an s3:// URI or an absolute local path, as the producer
    writes them. A relative or empty one would resolve against the worker's own folder."""
    path = uri.removeprefix("file://")
    if not (uri.startswith("s3://") or os.path.isabs(path)) or "\x00" in uri:
        raise PayloadError(f"payload field {field_name}={printable(repr(uri))}: must be an s3:// URI or an absolute path")
    return uri


def check_batch_name(batch: str) -> str:
    if not _BATCH.fullmatch(batch or ""):
        raise PayloadError(f"invalid batch name {batch!r}: 1-64 letters, digits, '_' or '-'")
    return batch


def default_batch_name(source_root: str, dest_root: str) -> str:
    """Same source and destination -> same batch, so a re-run resumes it."""
    return "b-" + hashlib.sha1(f"{source_root}\0{dest_root}".encode()).hexdigest()[:12]


def job_id(batch: str, source: str) -> str:
    digest = hashlib.sha1(source.encode("utf-8", "surrogateescape")).hexdigest()   # any file name
    return f"{check_batch_name(batch)}-{digest[:24]}"


@dataclass
class JobPayload:
    source: str                     # URI of the scan
    dest: str                       # output root URI
    name: str                       # relative name; outputs are <dest>/<stem>.mask.png, ...
    batch: str
    model: str | None = None        # registry reference; None: the worker's default
    options: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data) -> "JobPayload":
        if not isinstance(data, dict):
            raise PayloadError(f"job payload must be a JSON object, not {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise PayloadError(f"unknown payload fields: {', '.join(sorted(unknown))}")
        try:
            payload = cls(**data)
        except TypeError as exc:
            raise PayloadError(f"incomplete payload ({exc})") from None
        for name in ("source", "dest", "name", "batch"):
            if not isinstance(getattr(payload, name), str):
                raise PayloadError(f"payload field {name} must be a string")
        if payload.model is not None and not isinstance(payload.model, str):
            raise PayloadError("payload field model must be a string")
        for name in ("source", "dest"):
            check_root(name, getattr(payload, name))
        check_options(payload.options)
        safe_relative(payload.name)
        check_batch_name(payload.batch)
        return payload

    @property
    def job_id(self) -> str:
        return job_id(self.batch, self.source)
