"""The compiled models a worker process holds, one per (model, options) it has been asked for.

Compiled here, in the process that infers (a model compiled before a fork hangs in the
child). Before each job the model reference is resolved again (a small file read): when
`latest` now names another version, that version is compiled and used from then on.
"""
import logging
from dataclasses import asdict, replace

from shared import registry
from shared.engine import EngineSettings
from shared.pipeline import SegmentOptions, open_session

log = logging.getLogger("dustspot.worker")


class SessionCache:
    def __init__(self, default_model: str | None, registry_root: str | None,
                 settings: EngineSettings, base_options: SegmentOptions | None = None,
                 follow_latest: bool = True):
        self.default_model = default_model
        self.registry_root = registry_root
        self.settings = settings
        self.base_options = base_options or SegmentOptions()
        self.follow_latest = follow_latest
        self._sessions = {}

    def get(self, model: str | None, options: dict):
        ref = model or self.default_model
        version = registry.resolve(ref, self.registry_root, verify=False).version if self.follow_latest else None
        opts = replace(self.base_options, **options)
        key = (ref, version, tuple(sorted(asdict(opts).items())))
        if key not in self._sessions:
            stale = [k for k in self._sessions if k[0] == ref and k[1] != version]
            for k in stale:                       # a promoted model replaces the old one
                log.info("model %s: %s -> %s", ref, k[1], version)
                del self._sessions[k]
            self._sessions[key] = open_session(ref, opts, self.settings, self.registry_root)
        return self._sessions[key]


CACHE: SessionCache | None = None     # set by `dustspot worker` before it starts working


def configure(cache: SessionCache) -> None:
    global CACHE
    CACHE = cache
