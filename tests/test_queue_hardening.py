"""Queue hardening with real services: undecodable file names, bad S3 keys, duplicate jobs,
the worker's compiled-model cache, job option checks, relative roots, failed reports and
batches whose jobs were skipped or whose records expired."""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import EXACT, textured
from tests.scans import write, write_truncated_jpeg
from tests.services import redis_server, redis_url, s3_endpoint  # noqa: F401 (fixtures)
from tests.test_queue import FLAGS, cli, env  # noqa: F401 (env: a fixture)


@pytest.fixture
def redis(redis_url):
    from redis import Redis
    return Redis.from_url(redis_url)


def burst_worker(env):
    proc = subprocess.run([sys.executable, "-m", "shared.cli", "worker", "--burst", "--threads", "1", *FLAGS],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_undecodable_file_name_fails_its_job_and_the_worker_goes_on(tmp_path, env, redis):
    from rq.job import Job

    from shared import batches
    from shared.queues import serializer
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    bad = os.path.join(os.fsencode(src), b"bad-\xff.jpg")
    write_truncated_jpeg(os.fsdecode(bad), textured(200, 200, seed=1))
    write(src / "good.png", textured(90, 120, seed=2))
    batch = cli(["enqueue", str(src), "--out", str(dst)], env).stdout.strip()
    log = burst_worker(env)
    assert (dst / "good.mask.png").exists(), log[-3000:]           # the next job ran
    statuses = batches.job_statuses(redis, batch)
    assert sorted(statuses.values()) == ["failed", "finished"], statuses
    failed = [j for j, s in statuses.items() if s == "failed"][0]
    job = Job.fetch(failed, connection=redis, serializer=serializer())
    assert "bad-\\xff.jpg" in job.meta["error"] and "truncated JPEG" in job.meta["error"]
    assert "truncated JPEG" in job.latest_result().exc_string
    summary = json.loads((dst / f"dustspot-batch-{batch}.json").read_text())
    assert list(summary["failures"]) == ["bad-\\xff.jpg"] and summary["spots_per_scan"].keys() == {"good.png"}
    status = cli(["status", batch, "--failures"], env).stdout
    assert "1 done, 1 failed" in status and "FAILED bad-\\xff.jpg" in status


def test_bad_s3_key_is_refused_alone_and_the_prefix_is_enqueued(tmp_path, env, redis, s3_endpoint):
    import boto3

    from producer.enqueue import enqueue
    from shared import batches
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="odd")
    for key in ("roll/a.png", "roll//c.png", "roll/x\\d.png", "roll/b.png"):
        s3.put_object(Bucket="odd", Key=key, Body=b"not decoded here")
    result = enqueue(redis, "s3://odd/roll", str(tmp_path / "dst"), "odd")
    # a backslash is an ordinary character in a key: x\d.png is enqueued as itself
    assert result.enqueued == 3 and sorted(batches.job_statuses(redis, "odd").values()) == ["queued"] * 3
    refused = dict(result.refused)
    assert set(refused) == {"/c.png"} and "escapes its root" in refused["/c.png"]
    env = {**env, **{k: os.environ[k] for k in os.environ if k.startswith("AWS_")}}
    res = cli(["enqueue", "s3://odd/roll", "--out", str(tmp_path / "dst2")], env)
    assert "refused /c.png: " in res.stderr and "3 enqueued" in res.stderr and "1 refused" in res.stderr
    # one object rather than a prefix
    assert enqueue(redis, "s3://odd/roll/a.png", str(tmp_path / "one"), "one").enqueued == 1


def test_duplicate_scans_are_refused_before_the_batch_records_them(tmp_path, redis):
    from producer.enqueue import enqueue
    from shared import batches
    src = tmp_path / "src"
    src.mkdir()
    write(src / "a.png", textured(40, 40))
    write(src / "b.png", textured(40, 40, seed=1))
    result = enqueue(redis, str(src), str(tmp_path / "dst"), "dup", keys=["a.png", "b.png", "a.png"])
    assert result.enqueued == 2 and [name for name, _ in result.refused] == ["a.png"]
    assert "same scan as 'a.png'" in result.refused[0][1]
    assert redis.scard(batches.key("dup", "pending")) == 2 == redis.scard(batches.key("dup", "jobs"))
    assert batches.counts(redis, "dup")["queued"] == 2


def test_scans_sharing_an_output_stem_are_refused_not_overwritten(tmp_path, redis):
    # a.png and a.tif would both write a.mask.png and a.json: the first keeps them
    from producer.enqueue import enqueue
    src = tmp_path / "src"
    src.mkdir()
    write(src / "a.png", textured(40, 40))
    write(src / "a.tif", textured(40, 40, seed=1))
    write(src / "b.png", textured(40, 40, seed=2))
    result = enqueue(redis, str(src), str(tmp_path / "dst"), "stems")
    assert result.enqueued == 2 and [name for name, _ in result.refused] == ["a.tif"]
    assert "would overwrite those of" in result.refused[0][1] and "a.png" in result.refused[0][1]


def test_session_cache_compiles_per_tile_only_and_keeps_few(registry_root):
    from shared.engine import EngineSettings
    from shared.pipeline import SegmentOptions
    from worker.sessions import MAX_SESSIONS, SessionCache
    cache = SessionCache("identity", registry_root, EngineSettings(batch=1, **EXACT), SegmentOptions(tile=64, overlap=16))
    first = cache.get(None, {})
    for t in (0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9):
        session = cache.get(None, {"threshold": t, "overlay": t > 0.5, "max_pixels": 10 ** 6, "working_size": 200})
        assert session.engine is first.engine and session.options.threshold == t
        assert session.options.overlay == (t > 0.5) and session.options.working_size == 200
    assert len(cache) == 1 and first.options.threshold == 0.5 and first.options.overlay is False
    for tile in (96, 128, 160, 192):
        assert cache.get(None, {"tile": tile}).engine.tile == tile
    assert len(cache) == MAX_SESSIONS == 2


def test_a_pinned_worker_keeps_its_version_after_an_eviction(tmp_path):
    # --pin-model: an LRU eviction and recompile must not pick up a newly promoted `latest`
    from shared import registry
    from shared.engine import EngineSettings
    from shared.pipeline import SegmentOptions
    from tests.ovmodels import conv_model, publish_model
    from worker.sessions import SessionCache
    root = str(tmp_path / "registry")
    publish_model(conv_model(seed=1), root, "pinned", "1")
    cache = SessionCache("pinned", root, EngineSettings(batch=1, **EXACT), SegmentOptions(tile=64, overlap=16),
                         follow_latest=False, max_sessions=1)
    assert cache.get(None, {}).model["version"] == "1"
    publish_model(conv_model(seed=2), root, "pinned", "2")
    registry.promote(root, "pinned", "2")
    assert cache.get(None, {"tile": 96}).model["version"] == "1"      # evicts the tile-64 compile
    assert cache.get(None, {}).model["version"] == "1"                 # recompiled: still version 1
    follower = SessionCache("pinned", root, EngineSettings(batch=1, **EXACT), SegmentOptions(tile=64, overlap=16))
    assert follower.get(None, {}).model["version"] == "2"


def test_job_options_are_checked_and_cannot_raise_the_worker_limit(tmp_path, env, registry_root):
    from shared.engine import EngineSettings
    from shared.jobs import JobPayload, PayloadError
    from shared.pipeline import SegmentOptions
    from worker.sessions import SessionCache
    base = {"source": "/x/a.png", "dest": "/y", "name": "a.png", "batch": "b"}
    for options, named in (({"working_size": 60000}, "working_size"), ({"threshold": "0.5"}, "threshold"),
                           ({"overlay": 1}, "overlay"), ({"tile": 10 ** 6}, "tile"),
                           ({"max_pixels": -1}, "max_pixels"), ({"min_area": 2.5}, "min_area"),
                           ({"mode": "huge"}, "mode"), ({"working_size": 2000, "max_pixels": 10 ** 6}, "working_size")):
        with pytest.raises(PayloadError, match=f"job option {named}="):
            JobPayload.from_dict({**base, "options": options})
    JobPayload.from_dict({**base, "options": {"working_size": 1000, "threshold": 1, "overlay": True}})
    cache = SessionCache("identity", registry_root, EngineSettings(batch=1, **EXACT),
                         SegmentOptions(tile=64, overlap=16, max_pixels=1_000_000))
    assert cache.get(None, {"max_pixels": 10 ** 9}).options.max_pixels == 1_000_000
    assert cache.get(None, {"max_pixels": 5000, "working_size": 64}).options.max_pixels == 5000
    with pytest.raises(PayloadError, match="working_size=2000"):
        cache.get(None, {"working_size": 2000})                  # 4 MP working image, 1 MP limit
    res = cli(["enqueue", str(tmp_path), "--out", str(tmp_path / "o"), "--size", "60000", "--dry-run"], env, check=False)
    assert res.returncode != 0 and "--size" in res.stderr


def test_jobs_and_the_pipeline_refuse_the_same_option_values():
    # one rule set (shared/option_rules.py): what a job may not ask for, a flag or a model's
    # recommendation may not set either
    from shared.jobs import JobPayload, PayloadError
    from shared.option_rules import OptionError
    from shared.pipeline import SegmentOptions
    base = {"source": "/x/a.png", "dest": "/y", "name": "a.png", "batch": "b"}
    for options in ({"threshold": 0}, {"spot_threshold": 1.5}, {"min_area": 0}, {"trim": 1.0}, {"trim": -0.1}, {"neutral": -1},
                    {"neutral": 256}, {"neutral": "10"}, {"tile": 16},
                    {"tile": 64, "overlap": 64}, {"tile": 64, "overlap": 40}, {"mode": "huge"}, {"working_size": 10 ** 6}):
        (named,) = [k for k in options if k != "tile"] or ["tile"]
        with pytest.raises(PayloadError, match=f"job option {named}="):
            JobPayload.from_dict({**base, "options": options})
        with pytest.raises(OptionError, match=f"option {named}=") as refused:
            SegmentOptions(**options).resolved()
        assert refused.value.name == named
    with pytest.raises(OptionError, match="option threshold=1.5"):
        SegmentOptions().resolved({"recommended": {"threshold": 1.5}})
    assert SegmentOptions(tile=64, overlap=0, threshold=1).resolved({"recommended": {"min_area": 3}}).min_area == 3
    assert JobPayload.from_dict({**base, "options": {"trim": 0.3}}).options["trim"] == 0.3       # a job may set it
    assert JobPayload.from_dict({**base, "options": {"neutral": 0}}).options["neutral"] == 0


def test_the_last_job_is_known_again_when_its_first_reply_was_lost(redis):
    # a worker retries job_ended after a connection error; the first try may have reached the
    # server (pending already emptied): the retry must still answer "last", or no summary is written
    from shared import batches
    batches.register(redis, "lost", {"dest": "/nowhere"}, ["j1", "j2"], ["j1", "j2"])
    assert batches.job_ended(redis, "lost", "j1", "a.png", 3, None) is False
    assert batches.job_ended(redis, "lost", "j1", "a.png", 3, None) is False     # a repeat of a non-last job
    assert batches.job_ended(redis, "lost", "j2", "b.png", None, "corrupt") is True
    assert batches.job_ended(redis, "lost", "j2", "b.png", None, "corrupt") is True  # the retry
    assert batches.job_ended(redis, "lost", "j1", "a.png", 3, None) is False     # j1 never emptied it
    assert batches.summary(redis, "lost")["counts"] == {"total": 2, "finished": 1, "failed": 1, "pending": 0}


def test_a_summary_that_cannot_be_written_leaves_the_scan_done(tmp_path, env, redis):
    # the summary belongs to the batch: failing to write it must not fail (and count twice)
    # the scan whose outputs are written
    from shared import batches
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    write(src / "a.png", textured(60, 60))
    (dst / "dustspot-batch-nosummary.json").mkdir(parents=True)     # a folder where the summary goes
    cli(["enqueue", str(src), "--out", str(dst), "--batch", "nosummary"], env)
    log = burst_worker(env)
    assert "summary not written" in log and "dustspot-batch-nosummary.json" in log
    assert (dst / "a.mask.png").exists()
    assert batches.counts(redis, "nosummary")["finished"] == 1
    assert batches.summary(redis, "nosummary")["counts"] == {"total": 1, "finished": 1, "failed": 0, "pending": 0}


def test_the_summary_stays_inside_the_allowed_roots(tmp_path, redis, monkeypatch):
    from shared import batches
    from shared.errors import PathError
    monkeypatch.setenv("DUSTSPOT_ALLOWED_ROOTS", str(tmp_path / "allowed"))
    batches.register(redis, "elsewhere", {"dest": str(tmp_path / "outside")}, ["j"], ["j"])
    with pytest.raises(PathError, match="outside the allowed roots"):
        batches.write_summary(redis, "elsewhere")
    assert not (tmp_path / "outside").exists()


def test_a_failed_rerun_is_not_also_counted_finished(redis):
    from shared import batches
    batches.register(redis, "rerun2", {"dest": "/nowhere"}, ["j"], ["j"])
    assert batches.job_ended(redis, "rerun2", "j", "a.png", 4, None)
    redis.sadd(batches.key("rerun2", "pending"), "j")                  # --force re-enqueues it
    assert batches.job_ended(redis, "rerun2", "j", "a.png", None, "truncated JPEG")
    assert batches.summary(redis, "rerun2")["counts"] == {"total": 1, "finished": 0, "failed": 1, "pending": 0}


def test_retry_failed_goes_on_past_a_job_that_left_its_failed_registry(tmp_path, env, redis):
    # e.g. requeued meanwhile by another retry-failed: the others are still requeued, and the
    # batch does not wait for the one that could not be
    from rq.registry import FailedJobRegistry

    from producer.enqueue import retry_failed
    from shared import batches
    from shared.queues import queue
    src = tmp_path / "src"
    src.mkdir()
    for name in ("bad1.jpg", "bad2.jpg"):
        write_truncated_jpeg(str(src / name), textured(80, 80))
    batch = cli(["enqueue", str(src), "--out", str(tmp_path / "dst")], env).stdout.strip()
    burst_worker(env)
    failed = FailedJobRegistry(queue=queue("dustspot", redis))
    gone, kept = sorted(batches.job_statuses(redis, batch))
    assert sorted(failed.get_job_ids()) == [gone, kept]
    redis.zrem(failed.key, gone)
    assert retry_failed(redis, batch) == 1
    assert {j.decode() for j in redis.smembers(batches.key(batch, "pending"))} == {kept}
    assert queue("dustspot", redis).get_job_ids() == [kept]


def test_a_scan_with_another_scans_outputs_in_the_destination_is_refused(tmp_path, redis):
    # roll2/Scan-001.tif into the --out that already holds roll1/Scan-001.tif's outputs:
    # not "done", and not overwritten either, --force or not
    from producer.enqueue import enqueue
    dst = tmp_path / "dst"
    for roll in ("roll1", "roll2"):
        (tmp_path / roll).mkdir()
        write(tmp_path / roll / "Scan-001.png", textured(40, 40))
    dst.mkdir()
    write(dst / "Scan-001.mask.png", textured(40, 40, channels=1))
    (dst / "Scan-001.json").write_text(json.dumps({"status": "ok", "input": str(tmp_path / "roll1" / "Scan-001.png")}))
    again = enqueue(redis, str(tmp_path / "roll1"), str(dst), "roll1")
    assert again.skipped_done == 1 and again.enqueued == 0 and not again.refused
    for force in (False, True):
        other = enqueue(redis, str(tmp_path / "roll2"), str(dst), "roll2", force=force)
        assert other.enqueued == 0 and other.skipped_done == 0
        ((name, reason),) = other.refused
        assert name == "Scan-001.png" and "roll1" in reason and "another scan" in reason
    assert enqueue(redis, str(tmp_path / "roll1"), str(dst), "roll1", force=True).enqueued == 1


STOP_WHILE_STARTING = """
import os, signal, sys
from redis import Redis
from shared.queues import queue
from worker.worker import DustspotWorker
redis = Redis.from_url(sys.argv[1])
worker = DustspotWorker([queue("starting", redis)], connection=redis)
register = worker.register_birth
def register_then_stop(*args, **kwargs):
    register(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGTERM)     # systemctl stop right after the worker registered
worker.register_birth = register_then_stop
worker.work()
print("registered after exit:", bool(redis.sismember("rq:workers", worker.key)))
"""


def test_a_stop_while_the_worker_starts_is_a_clean_exit(redis_url):
    # rq installs its signal handlers after registering the worker; a SIGTERM in between
    # used to kill it outright (SIGTERM, exit 143), still registered
    proc = subprocess.run([sys.executable, "-c", STOP_WHILE_STARTING, redis_url], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    output = proc.stdout + proc.stderr
    assert "stopping on request" in output and "registered after exit: False" in output


def test_relative_roots_become_absolute_and_name_one_batch(tmp_path, redis, monkeypatch):
    from producer.enqueue import enqueue
    from shared.jobs import JobPayload
    (tmp_path / "s2").mkdir()
    write(tmp_path / "s2" / "a.png", textured(40, 40))
    monkeypatch.chdir(tmp_path)
    plain = enqueue(redis, "s2", "out", dry_run=True)
    dotted = enqueue(redis, "./s2/", "./out/", dry_run=True)
    assert plain.batch == dotted.batch
    result = enqueue(redis, "./s2/", "out")
    assert result.batch == plain.batch
    from rq.job import Job

    from shared.queues import serializer
    job = Job.fetch(result.job_ids[0], connection=redis, serializer=serializer())
    payload = JobPayload.from_dict(job.args[0])
    assert payload.source == str(tmp_path / "s2" / "a.png") and payload.dest == str(tmp_path / "out")


def test_only_an_ok_report_counts_as_done(tmp_path, redis):
    from producer.enqueue import enqueue
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    for stem, status in (("a", "failed"), ("b", "ok")):
        write(src / f"{stem}.png", textured(40, 40))
        write(dst / f"{stem}.mask.png", textured(40, 40, channels=1))
        (dst / f"{stem}.json").write_text(json.dumps({"status": status}))
    result = enqueue(redis, str(src), str(dst), "rerun")
    assert result.skipped_done == 1 and result.enqueued == 1


def test_a_dry_run_predicts_the_skips_and_enqueues_nothing(tmp_path, env, redis):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    for stem in ("done", "new", "queued"):
        write(src / f"{stem}.png", textured(40, 40))
    write(dst / "done.mask.png", textured(40, 40, channels=1))
    (dst / "done.json").write_text(json.dumps({"status": "ok"}))
    queued = cli(["enqueue", str(src / "queued.png"), "--out", str(dst), "--batch", "dry"], env)
    assert "1 enqueued" in queued.stderr
    before = sorted(redis.keys("*"))
    res = cli(["enqueue", str(src), "--out", str(dst), "--batch", "dry", "--dry-run"], env)
    assert "3 scans: 2 would be enqueued, 1 already done, queue not looked up" in res.stderr
    from producer.enqueue import enqueue
    result = enqueue(redis, str(src), str(dst), "dry", dry_run=True)      # with a Redis: looked up
    assert (result.enqueued, result.skipped_done, result.skipped_in_flight) == (1, 1, 1)
    assert sorted(redis.keys("*")) == before                              # nothing written


def test_status_watch_ends_with_skipped_scans_and_expired_records(tmp_path, env, redis):
    from shared import batches
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    write(src / "done.png", textured(60, 60))
    write(src / "new.png", textured(60, 60, seed=3))
    write(dst / "done.mask.png", textured(60, 60, channels=1))
    (dst / "done.json").write_text(json.dumps({"status": "ok"}))
    res = cli(["enqueue", str(src), "--out", str(dst)], env)
    batch = res.stdout.strip()
    assert "1 enqueued, 1 already done" in res.stderr
    assert redis.scard(batches.key(batch, "jobs")) == 1           # the skipped scan is not waited for
    burst_worker(env)
    (job,) = batches.job_statuses(redis, batch)
    redis.delete(f"rq:job:{job}")                                  # as after RESULT_TTL
    assert batches.counts(redis, batch)["expired"] == 1
    watch = cli(["status", batch, "--watch"], env, timeout=60)
    assert "1 ended (record expired)" in watch.stdout


def test_local_source_errors_and_single_file(tmp_path, env, redis):
    from producer.enqueue import enqueue
    res = cli(["enqueue", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")], env, check=False)
    assert res.returncode != 0 and "no such folder or file" in res.stderr
    write(tmp_path / "one.png", textured(40, 40))
    result = enqueue(redis, str(tmp_path / "one.png"), str(tmp_path / "o"))
    assert result.enqueued == 1 and result.refused == []
