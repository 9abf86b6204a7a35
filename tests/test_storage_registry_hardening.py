"""Storage and registry hardening: outages are not "not found", outputs are readable by
others, concurrent writers do not delete each other's work, reads have a size limit, names
are refused rather than rewritten, a corrupt manifest or bad publish input is a clear error."""
import json
import os
import stat
import subprocess
import sys
import threading

import pytest

from shared import registry, storage
from shared.errors import ModelError, PathError, StorageError, TransientStorageError
from shared.storage import LocalStorage, S3Storage, safe_relative
from tests.ovmodels import conv_model, publish_model
from tests.services import free_port, s3_endpoint  # noqa: F401 (fixture)

CLI = [sys.executable, "-m", "shared.cli", "models"]


def cli(args, **kwargs):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, check=False, **kwargs)


def no_traceback(res):
    return "Traceback" not in res.stderr and "Traceback" not in res.stdout


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture
def bucket(s3_endpoint, monkeypatch):  # noqa: F811 (fixture)
    import boto3
    monkeypatch.setattr(storage, "_S3_CLIENTS", {})     # no client of another module's moto server
    name = f"hard-{free_port()}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


# --- 1. an S3 outage is not "model not found" -------------------------------------------

def test_registry_outage_is_transient_not_not_found(monkeypatch):
    """Nothing listens on the endpoint: the registry says so (retryable), not 'no x/latest'."""
    import boto3
    from botocore.config import Config
    dead = f"http://127.0.0.1:{free_port()}"
    for k, v in {"AWS_ENDPOINT_URL": dead, "AWS_ACCESS_KEY_ID": "testing",
                 "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    # One attempt instead of six with backoff, so the test is quick; the error is a real one.
    client = boto3.client("s3", config=Config(retries={"max_attempts": 1}, connect_timeout=2))
    monkeypatch.setattr(storage, "_S3_CLIENTS", {(os.getpid(), dead): client})
    with pytest.raises(TransientStorageError):
        registry.resolve("x", "s3://models/r", verify=False)
    with pytest.raises(TransientStorageError):
        registry.resolve("x:1", "s3://models/r")             # the manifest fetch, too
    with pytest.raises(TransientStorageError):
        registry.list_models("s3://models/r")


def test_s3_client_faults_are_permanent_throttling_and_server_faults_are_not(s3_endpoint):  # noqa: F811
    from botocore.exceptions import ClientError

    def answer(code, status):
        return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")

    for code, status in (("InvalidArgument", 400), ("PermanentRedirect", 301), ("AuthorizationHeaderMalformed", 400),
                         ("400", 400), ("PreconditionFailed", 412)):
        error = storage._s3_error("s3://b/k", "read", answer(code, status))
        assert type(error) is StorageError, code
    for code, status in (("SlowDown", 503), ("RequestTimeout", 400), ("InternalError", 500), ("", 429),
                         ("TooManyRequests", 429), ("RequestTimeTooSkewed", 403)):
        assert isinstance(storage._s3_error("s3://b/k", "read", answer(code, status)), TransientStorageError), code
    # a bucket name botocore refuses before sending: at once, not after a minute of retries
    with pytest.raises(StorageError, match="s3://bad bucket/k.jpg: cannot read") as refused:
        S3Storage("s3://bad bucket").read("k.jpg")
    assert not isinstance(refused.value, TransientStorageError)


# --- 2. outputs get the permissions open() would give ------------------------------------

def test_written_files_are_readable_by_others(tmp_path, umask_022):
    store = LocalStorage(str(tmp_path))
    path = store.write("a/b.mask.png", b"mask")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    os.umask(0o027)
    path = store.write("a/c.json", b"{}")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


def test_promoted_latest_and_cached_model_are_readable(tmp_path, bucket, monkeypatch, umask_022):
    root = str(tmp_path / "reg")
    publish_model(conv_model(seed=1), root, "m", "1")
    publish_model(conv_model(seed=2), root, "m", "2")
    res = cli(["--registry", root, "promote", "m:1"])
    assert res.returncode == 0, res.stderr
    assert stat.S_IMODE(os.stat(os.path.join(root, "m", "latest")).st_mode) == 0o644
    # An S3 registry's local cache: workers of several uids on a host share it.
    monkeypatch.setenv("DUSTSPOT_CACHE", str(tmp_path / "cache"))
    s3root = f"s3://{bucket}/reg"
    local = registry.resolve("m:1", root)
    registry.publish(s3root, "m", "1", local.xml, dict(local.manifest))
    handle = registry.resolve("m", s3root)
    for fname in ("model.xml", "model.bin", "manifest.json"):
        assert stat.S_IMODE(os.stat(os.path.join(handle.folder, fname)).st_mode) == 0o644


# --- 3. concurrent writers of one key ------------------------------------------------------

def test_concurrent_writers_do_not_remove_each_others_parts(tmp_path):
    store = LocalStorage(str(tmp_path))
    errors = []

    def writer(n):
        for i in range(30):
            try:
                store.write("a/b.mask.png", f"{n}-{i}".encode() * 20000)
            except StorageError as exc:
                errors.append(str(exc))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(os.listdir(tmp_path / "a")) == ["b.mask.png"]


def test_names_near_the_file_name_limit_are_written_and_their_stale_parts_cleaned(tmp_path):
    """A 250-byte name (multi-byte characters across the cut) fits the file system, so its
    temporary file must too; a dead writer's part of it is found again and removed."""
    store = LocalStorage(str(tmp_path))
    name = "é" * 118 + ".mask.png"                                   # 236 + 9 = 245 bytes
    assert len(name.encode()) == 245
    dead = tmp_path / (storage._part_prefix(name) + "deadbeef.part")
    dead.write_bytes(b"left by a writer that died")
    assert len(os.fsencode(dead.name)) <= storage.NAME_MAX_BYTES and name.startswith(dead.name[1:100])
    undecodable = os.fsdecode(b"\xff" * 240 + b".json")               # a name that is not UTF-8
    assert len(os.fsencode(storage._part_prefix(undecodable) + "12345678.part")) <= storage.NAME_MAX_BYTES
    store.write(name, b"mask")
    assert os.listdir(tmp_path) == [name]
    assert (tmp_path / name).read_bytes() == b"mask"
    too_long = "x" * 256
    with pytest.raises(StorageError, match="cannot write"):
        store.write(too_long, b"mask")
    assert os.listdir(tmp_path) == [name]                            # no part left behind


def test_part_of_a_live_writer_in_another_process_is_kept(tmp_path):
    """A part locked by its (live) writer survives another write; once it dies it is removed."""
    (tmp_path / "a").mkdir()
    part = tmp_path / "a" / ".b.mask.png.live1234.part"
    holder = subprocess.Popen(
        [sys.executable, "-c", ("import fcntl, sys; f = open(sys.argv[1], 'wb'); "
                                "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()"),
         str(part)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        store = LocalStorage(str(tmp_path))
        store.write("a/b.mask.png", b"whole")
        assert part.exists()
    finally:
        holder.stdin.close()
        holder.wait(10)
    store.write("a/b.mask.png", b"again")                     # its writer is gone now
    assert sorted(os.listdir(tmp_path / "a")) == ["b.mask.png"]


# --- 4. reads have a size limit ----------------------------------------------------------

def test_s3_read_refuses_an_object_over_the_limit(bucket):
    import boto3
    boto3.client("s3").put_object(Bucket=bucket, Key="scans/huge.tif", Body=b"\0" * 300_000)
    store = S3Storage(f"s3://{bucket}/scans")
    with pytest.raises(StorageError, match=r"huge\.tif.*300000 bytes.*limit of 100000") as info:
        store.read("huge.tif", max_bytes=100_000)
    assert not isinstance(info.value, TransientStorageError)
    assert store.read("huge.tif", max_bytes=300_000) == b"\0" * 300_000
    assert storage.MAX_READ_BYTES >= 300_000_000 * 8            # a full-size 16-bit RGBA scan fits


def test_local_read_refuses_a_file_over_the_limit(tmp_path):
    (tmp_path / "big.png").write_bytes(b"\0" * 5000)
    with pytest.raises(StorageError, match=r"big\.png.*5000 bytes"):
        LocalStorage(str(tmp_path)).read("big.png", max_bytes=4096)
    assert LocalStorage(str(tmp_path)).read("big.png") == b"\0" * 5000


# --- 5. names are refused, not rewritten -------------------------------------------------

@pytest.mark.parametrize("name", ["a//b.png", "a/./b.png", "a/", "/abs.png", "../x.png",
                                  "a/../../x.png", ""])
def test_unusual_relative_names_are_refused(name):
    with pytest.raises(PathError):
        safe_relative(name)


def test_backslash_file_is_not_read_as_a_subfolder_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.png").write_bytes(b"the other file")
    (tmp_path / "sub\\b.png").write_bytes(b"this file")
    store = LocalStorage(str(tmp_path))
    assert "sub\\b.png" in store.list()
    assert store.read("sub\\b.png") == b"this file"          # itself: the backslash is a character
    assert safe_relative("..\\x.png") == "..\\x.png"           # a file name, not a climb on Linux
    assert safe_relative("a/b.c.png") == "a/b.c.png"
    assert store.read("sub/b.png") == b"the other file"


# --- 5b. delete removes the named object only; a missing one is fine -------------------

def test_local_delete_removes_the_file_and_nothing_else(tmp_path):
    root, victim = tmp_path / "out", tmp_path / "x"
    victim.write_bytes(b"outside the root")
    store = LocalStorage(str(root))
    store.write("a/b.mask.png", b"mask")
    store.delete("a/b.mask.png")
    assert not (root / "a" / "b.mask.png").exists() and (root / "a").is_dir()
    store.delete("a/b.mask.png")                              # missing: not an error
    store.delete("gone/b.mask.png")
    (root / "f").write_bytes(b"a file")
    store.delete("f/b.mask.png")                              # a parent is a file: missing too
    for hostile in ("../x", "a/../../x", "/abs", ""):
        with pytest.raises(PathError):
            store.delete(hostile)
    assert victim.read_bytes() == b"outside the root" and root.is_dir()
    os.symlink(victim, root / "link.mask.png")
    store.delete("link.mask.png")                             # the link, never its target
    assert not os.path.lexists(root / "link.mask.png") and victim.exists()
    (root / "dir.mask.png").mkdir()
    with pytest.raises(StorageError, match=r"dir\.mask\.png: cannot delete") as info:
        store.delete("dir.mask.png")
    assert not isinstance(info.value, TransientStorageError)


def test_s3_delete_removes_the_object_and_nothing_else(bucket):
    import boto3
    boto3.client("s3").put_object(Bucket=bucket, Key="x", Body=b"outside the prefix")
    boto3.client("s3").put_object(Bucket=bucket, Key="out", Body=b"the prefix itself")
    store = S3Storage(f"s3://{bucket}/out")
    store.write("a/b.mask.png", b"mask")
    store.write("a/b.json", b"{}")
    store.delete("a/b.mask.png")
    assert not store.exists("a/b.mask.png") and store.list() == ["a/b.json"]
    store.delete("a/b.mask.png")                              # missing: not an error
    for hostile in ("../x", "a/../../x", "/x", ""):
        with pytest.raises(PathError):
            store.delete(hostile)
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(keys) == ["out", "out/a/b.json", "x"]
    with pytest.raises(StorageError, match="cannot delete") as info:
        S3Storage(f"s3://{bucket}-missing/out").delete("a/b.mask.png")
    assert not isinstance(info.value, TransientStorageError)


# --- 6. corrupt manifests are clear errors; `list` goes on -------------------------------

def test_corrupt_manifests_in_a_local_registry(tmp_path):
    root = str(tmp_path / "reg")
    publish_model(conv_model(), root, "m", "1")
    for version, body in (("2", "{not json"), ("3", "[1, 2]")):
        os.makedirs(os.path.join(root, "m", version))
        with open(os.path.join(root, "m", version, "manifest.json"), "w") as f:
            f.write(body)
    res = cli(["--registry", root, "list"])
    assert res.returncode == 0 and no_traceback(res), res.stderr
    assert "m:1" in res.stdout and "m:2" not in res.stdout and "m:3" not in res.stdout
    assert os.path.join(root, "m", "2", "manifest.json") in res.stderr and "not JSON" in res.stderr
    assert os.path.join(root, "m", "3", "manifest.json") in res.stderr and "not an object" in res.stderr
    for ref in ("m:2", "m:3"):
        res = cli(["--registry", root, "show", ref])
        assert res.returncode == 1 and no_traceback(res), res.stderr
        assert f"m/{ref[-1]}/manifest.json" in res.stderr and "unreadable manifest" in res.stderr
    with pytest.raises(ModelError, match="not an object"):
        registry.resolve("m:3", root, verify=False)


def test_corrupt_manifests_in_an_s3_registry(tmp_path, bucket, monkeypatch):
    import boto3
    monkeypatch.setenv("DUSTSPOT_CACHE", str(tmp_path / "cache"))
    local = publish_model(conv_model(), str(tmp_path / "local"), "m", "1")
    root = f"s3://{bucket}/reg"
    registry.publish(root, "m", "1", local.xml, dict(local.manifest))
    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key="reg/m/2/manifest.json", Body=b"{not json")
    s3.put_object(Bucket=bucket, Key="reg/m/3/manifest.json", Body=b'"a string"')
    env = {**os.environ}
    res = cli(["--registry", root, "list"], env=env)
    assert res.returncode == 0 and no_traceback(res), res.stderr
    assert "* m:1" in res.stdout and "m:2" not in res.stdout
    assert f"{root}/m/2/manifest.json" in res.stderr and f"{root}/m/3/manifest.json" in res.stderr
    for ref in ("m:2", "m:3"):
        res = cli(["--registry", root, "show", ref], env=env)
        assert res.returncode == 1 and no_traceback(res), res.stderr
        assert f"{root}/m/{ref[-1]}/manifest.json" in res.stderr
    with pytest.raises(ModelError, match="unreadable manifest"):
        registry.resolve("m:2", root)


def test_listing_a_missing_bucket_is_a_clear_error(s3_endpoint):  # noqa: F811 (fixture)
    res = cli(["--registry", f"s3://no-such-bucket-{free_port()}/models", "list"])
    assert res.returncode == 1 and no_traceback(res), res.stderr
    assert "cannot list registry" in res.stderr and "not found" in res.stderr


# --- 7. publish input errors ------------------------------------------------------------

def test_publish_without_bin_is_a_clear_error_and_leaves_nothing(tmp_path):
    src = publish_model(conv_model(), str(tmp_path / "src"), "m", "1")
    lone = tmp_path / "lone" / "model.xml"
    lone.parent.mkdir()
    with open(src.xml, "rb") as f:
        lone.write_bytes(f.read())
    root = tmp_path / "reg"
    root.mkdir()
    res = cli(["--registry", str(root), "publish", str(lone), "--name", "n", "--version", "1"])
    assert res.returncode == 1 and no_traceback(res), res.stderr
    assert "model.bin" in res.stderr and "no such file" in res.stderr
    assert os.listdir(root) == []
    with pytest.raises(ModelError, match="no such file"):
        registry.publish(str(root), "n", "1", str(lone), {})
    assert os.listdir(root) == []


def test_publish_cleans_its_partial_folder_when_a_copy_fails(tmp_path):
    src = publish_model(conv_model(), str(tmp_path / "src"), "m", "1")
    root = tmp_path / "reg"
    (root / "n").mkdir(parents=True)
    with pytest.raises(ModelError, match="cannot publish"):
        registry.publish(str(root), "n", "1", src.xml, {"precision": {1, 2}})   # not JSON-able
    assert os.listdir(root / "n") == []


@pytest.mark.parametrize("body,message", [("{broken", "not JSON"), ("[1, 2]", "JSON object")])
def test_publish_with_a_bad_manifest_file_is_a_clear_error(tmp_path, body, message):
    src = publish_model(conv_model(), str(tmp_path / "src"), "m", "1")
    manifest = tmp_path / "fields.json"
    manifest.write_text(body)
    root = tmp_path / "reg"
    root.mkdir()
    res = cli(["--registry", str(root), "publish", src.xml, "--name", "n", "--version", "1",
               "--manifest", str(manifest)])
    assert res.returncode == 1 and no_traceback(res), res.stderr
    assert str(manifest) in res.stderr and message in res.stderr
    assert os.listdir(root) == []


# --- 8. a bare name is a registry name, even beside a folder of that name ----------------

def test_bare_name_is_not_taken_for_a_folder(tmp_path):
    root = str(tmp_path / "reg")
    publish_model(conv_model(seed=1), root, "m", "1")
    publish_model(conv_model(seed=2), root, "m", "2")
    registry.promote(root, "m", "1")
    res = cli(["--registry", root, "show", "m"], cwd=root)                 # ./m is a folder here
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["version"] == "1"
    res = cli(["--registry", root, "show", "./m/2"], cwd=root)             # a path: has a separator
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["version"] == "2"
    res = cli(["--registry", root, "show", "."], cwd=os.path.join(root, "m", "2"))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["version"] == "2"
    with pytest.raises(ModelError, match="no such model folder"):
        registry.resolve("./nowhere", root)
