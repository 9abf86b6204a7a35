"""The compiled models a worker process holds: a few, reused across jobs.

Compiled here, in the process that infers (a model compiled before a fork hangs in the
child). Before each job the model reference is resolved again (a small file read): when
`latest` now names another version, that version is compiled and used from then on.

A compiled model depends only on the model (reference and version) and the tile it is
reshaped to (the engine settings are the worker's own, the same for every job). Every
other option (threshold, working size, overlay, ...) is applied per job to the same
compiled model. At most MAX_SESSIONS compiled models are kept (least recently used goes):
a stream of jobs with odd tiles cannot grow the worker without limit.
"""
import logging
from collections import OrderedDict
from dataclasses import dataclass, replace

from shared import defaults, registry
from shared.engine import EngineSettings, OpenVINOEngine
from shared.jobs import check_working_size
from shared.pipeline import SegmentOptions, Session

log = logging.getLogger("dustspot.worker")
MAX_SESSIONS = defaults.MAX_SESSIONS


@dataclass
class Compiled:
    engine: object
    manifest: dict
    info: dict


class SessionCache:
    def __init__(self, default_model: str | None, registry_root: str | None,
                 settings: EngineSettings, base_options: SegmentOptions | None = None,
                 follow_latest: bool = True, max_sessions: int = MAX_SESSIONS):
        self.default_model = default_model
        self.registry_root = registry_root
        self.settings = settings
        self.base_options = base_options or SegmentOptions()
        self.follow_latest = follow_latest
        self.max_sessions = max(1, max_sessions)
        self._compiled: OrderedDict = OrderedDict()
        self._pinned: dict = {}                     # --pin-model: ref -> the version first resolved

    def options_for(self, options: dict) -> SegmentOptions:
        """The worker's options with a job's on top; a job never raises the worker's pixel limit."""
        opts = replace(self.base_options, **options)
        limit = self.base_options.max_pixels or defaults.MAX_PIXELS
        if not opts.max_pixels or opts.max_pixels > limit:
            opts.max_pixels = limit
        return opts

    def get(self, model: str | None, options: dict) -> Session:
        ref = model or self.default_model
        if self.follow_latest:
            version = registry.resolve(ref, self.registry_root, verify=False).version
        else:                                       # pinned: the version first resolved, for good
            if ref not in self._pinned:
                self._pinned[ref] = registry.resolve(ref, self.registry_root, verify=False).version
            version = self._pinned[ref]
        opts = self.options_for(options)
        key = (ref, version, opts.tile)             # opts.tile None: the model's recommended tile
        compiled = self._compiled.get(key)
        if compiled is None:
            stale = [k for k in self._compiled if k[0] == ref and k[1] != version]
            for k in stale:                         # a promoted model replaces the old one
                log.info("model %s: %s -> %s", ref, k[1], version)
                del self._compiled[k]
            compiled = self._compile(ref, version, opts)
            self._compiled[key] = compiled
            while len(self._compiled) > self.max_sessions:
                old, _ = self._compiled.popitem(last=False)
                log.info("dropping compiled model %s (least recently used)", old)
        self._compiled.move_to_end(key)
        resolved = opts.resolved(compiled.manifest)
        if options.get("working_size") is not None:     # a job's own working size stays in the limit
            check_working_size(resolved.mode, resolved.working_size, resolved.max_pixels)
        return Session(compiled.engine, resolved, compiled.info)

    def _compile(self, ref: str | None, version: str | None, opts: SegmentOptions) -> Compiled:
        """Compile exactly `version` of a registry name (a compile after an eviction must not
        pick up a newer `latest` under --pin-model); a model folder is what it is."""
        name = ref or defaults.MODEL
        if version and not registry.is_path(name) and ":" not in name:
            name = f"{name}:{version}"
        handle = registry.resolve(name, self.registry_root)
        tile = opts.resolved(handle.manifest).tile
        engine = OpenVINOEngine(handle.xml, replace(self.settings, tile=tile), info=handle.describe())
        return Compiled(engine, handle.manifest, engine.info)

    def __len__(self) -> int:
        return len(self._compiled)


CACHE: SessionCache | None = None     # set by `dustspot worker` before it starts working


def configure(cache: SessionCache) -> None:
    global CACHE
    CACHE = cache
