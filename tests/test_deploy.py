"""Deployment files (deploy/, .dockerignore, docs/operations.md): they parse, and what they run exists.

No Docker engine or cluster is needed: the files are parsed and cross-checked against the real
CLI (click's own command objects), and the pieces that are plain commands are run for real: the
image's HEALTHCHECK, compose's bucket set-up, a systemd unit's ExecStart, honcho's export.

SLOW (about 30 s of this file's 40, most of it pip): the test_fresh_venv_* tests share one new
virtual environment with `pip install <repo>[worker]` (a real install, dependencies from the
package index) and run `dustspot` there. DUSTSPOT_SKIP_VENV_TESTS=1 skips them, saying so.
"""
import configparser
import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import click
import pytest
import yaml

from shared.cli import COMMANDS, main
from tests.services import redis_server, s3_endpoint  # noqa: F401 (fixtures)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(REPO, "deploy")
K8S = os.path.join(DEPLOY, "k8s")
SYSTEMD = os.path.join(DEPLOY, "systemd")
OPERATIONS = os.path.join(REPO, "docs", "operations.md")
ENV_EXAMPLE = os.path.join(DEPLOY, ".env.example")
DEFAULT_MODEL_POINTER = os.path.join(REPO, "models", "dustspot-unet", "latest")
ENV_VARIABLES = ("REDIS_URL", "REDIS_PASSWORD", "DUSTSPOT_MODELS", "DUSTSPOT_THREADS",
                 "RQ_DASHBOARD_USERNAME", "RQ_DASHBOARD_PASSWORD", "AWS_ENDPOINT_URL",
                 "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


# --- reading command lines and checking them against the CLI ------------------------------------

SHELL_OPERATORS = set(";&|<>()")


def _tokens(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>()")
    lexer.whitespace_split = True
    return list(lexer)


def invocations(line: str) -> list[list[str]]:
    """The argument lists of every `dustspot ...` a shell line runs.

    `dustspot` counts as the program when it is not an option's value (`honcho -a dustspot`) and
    has arguments; its arguments run up to the next shell operator.
    """
    tokens, found = _tokens(line), []
    for i, token in enumerate(tokens):
        if token != "dustspot" and not token.endswith("/bin/dustspot"):
            continue
        if i and tokens[i - 1].startswith("-"):
            continue
        args = []
        for arg in tokens[i + 1:]:
            if set(arg) <= SHELL_OPERATORS:
                break
            args.append(arg)
        if args:
            found.append(args)
    return found


def _param(command: click.Command, flag: str):
    for param in command.get_params(click.Context(command)):
        if flag in param.opts or flag in param.secondary_opts:
            return param
    return None


def _takes_value(param) -> bool:
    return isinstance(param, click.Option) and not param.is_flag and not param.count


def check_invocation(args: list[str]) -> list[str]:
    """Problems with `dustspot ARGS`: unknown (sub)commands, unknown flags. [] when it is fine."""
    command, path, i = main, ["dustspot"], 0
    while isinstance(command, click.Group):
        while i < len(args) and args[i].startswith("-"):
            flag = args[i].split("=", 1)[0]
            param = _param(command, flag)
            if param is None:
                return [f"`{' '.join(path)}` has no option {flag}"]
            i += 1 + (_takes_value(param) and "=" not in args[i])
        if i >= len(args):
            return [f"`{' '.join(path)}` without a command"]
        sub = command.get_command(click.Context(command), args[i])
        if sub is None:
            return [f"`{' '.join(path)}` has no command {args[i]!r}"]
        if (sub.help or "").startswith("(unavailable"):
            return [f"`dustspot {args[i]}` cannot load here: {sub.help}"]
        command, path, i = sub, path + [args[i]], i + 1
    return [f"`{' '.join(path)}` has no option {arg.split('=', 1)[0]}"
            for arg in args[i:] if arg.startswith("-") and arg != "-" and _param(command, arg.split("=", 1)[0]) is None]


def check_line(line: str, where: str) -> list[str]:
    return [f"{where}: {problem} (in: {line.strip()})"
            for args in invocations(line) for problem in check_invocation(args)]


def command_line(value) -> list[str]:
    """Shell lines from a command given as a string or an exec-form list (`sh -c SCRIPT` unwrapped)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    value = [str(v) for v in value]
    if len(value) >= 3 and os.path.basename(value[0]) in ("sh", "bash") and value[1] in ("-c", "-lc"):
        return [value[2]]
    return [shlex.join(value)]


def subcommands(lines) -> set[str]:
    return {args[0] for line in lines for args in invocations(line) if args and not args[0].startswith("-")}


def test_command_checker_is_not_vacuous():
    assert check_line("dustspot worker --threads 1 --burst", "x") == []
    assert check_line("dustspot models --registry /r promote dustspot-unet:v2", "x") == []
    assert check_line("X=1 dustspot status BATCH --watch | tee log  # comment --nope", "x") == []
    assert check_line("dustspot worker --no-such-flag", "x")
    assert check_line("dustspot frobnicate --x", "x")
    assert check_line("dustspot models --registry /r frobnicate x", "x")
    assert check_line("dustspot models --no-such-flag list", "x")
    assert invocations("honcho export systemd d -a dustspot -u dustspot -c worker=2") == []
    assert invocations("useradd --system dustspot") == []
    assert invocations("exec dustspot worker --threads ${DUSTSPOT_THREADS:-1}") == \
        [["worker", "--threads", "${DUSTSPOT_THREADS:-1}"]]
    assert command_line(["sh", "-c", "exec dustspot worker"]) == ["exec dustspot worker"]
    assert command_line(["dustspot"] + ["worker", "--threads", "$(DUSTSPOT_THREADS)"]) == \
        ["dustspot worker --threads '$(DUSTSPOT_THREADS)'"]


# --- YAML ------------------------------------------------------------------------------------------

def yaml_files() -> list[str]:
    found = []
    for folder, _, files in os.walk(DEPLOY):
        found += [os.path.join(folder, f) for f in files if f.endswith((".yaml", ".yml"))]
    return sorted(found)


def load_all(path: str) -> list:
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def test_every_yaml_file_under_deploy_parses():
    files = yaml_files()
    assert os.path.join(DEPLOY, "compose.yaml") in files and any(f.startswith(K8S) for f in files)
    for path in files:
        assert load_all(path), f"{path}: no documents"


# --- docker compose ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose():
    return load_all(os.path.join(DEPLOY, "compose.yaml"))[0]


def _env_example_names() -> set[str]:
    with open(ENV_EXAMPLE) as f:
        return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", f.read(), re.M))


def test_env_example_lists_every_variable():
    names = _env_example_names()
    assert set(ENV_VARIABLES) <= names, sorted(set(ENV_VARIABLES) - names)
    with open(ENV_EXAMPLE) as f:
        for line in f:
            if re.match(r"^[A-Z][A-Z0-9_]*=", line):
                assert " #" not in line, f"inline comment (systemd keeps it in the value): {line!r}"


def test_compose_services_commands_and_build_files_exist(compose):
    services = compose["services"]
    assert {"redis", "minio", "buckets", "worker", "dashboard", "enqueue"} <= set(services)
    lines = []
    for name, service in services.items():
        build = service.get("build")
        if build:
            context = os.path.normpath(os.path.join(DEPLOY, build["context"]))
            assert os.path.isdir(context), f"{name}: build context {context}"
            dockerfile = os.path.join(context, build.get("dockerfile", "Dockerfile"))
            assert os.path.isfile(dockerfile), f"{name}: {dockerfile} does not exist"
        for line in command_line(service.get("command")):
            assert not check_line(line, f"compose service {name}"), check_line(line, f"compose service {name}")
            lines.append(line)
    assert subcommands(lines) >= {"worker", "dashboard", "enqueue"}
    # every ${VAR} compose interpolates is documented in .env.example
    with open(os.path.join(DEPLOY, "compose.yaml")) as f:
        used = set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", f.read()))
    assert used <= _env_example_names(), sorted(used - _env_example_names())


def test_compose_settings_that_matter(compose):
    s = compose["services"]
    redis = " ".join(map(str, s["redis"]["command"]))
    assert "--appendonly yes" in redis and "--requirepass ${REDIS_PASSWORD" in redis
    assert "${REDIS_PASSWORD" in s["worker"]["environment"]["REDIS_URL"]
    assert s["worker"]["deploy"]["replicas"] and s["worker"]["stop_grace_period"] == "10m"
    assert {"RQ_DASHBOARD_USERNAME", "RQ_DASHBOARD_PASSWORD"} <= set(s["dashboard"]["environment"])
    assert "--bind 0.0.0.0" in s["dashboard"]["command"]
    assert s["enqueue"]["profiles"] == ["producer"] and s["enqueue"]["restart"] == "no"
    assert "minio" in s["minio"]["image"] and s["buckets"]["restart"] == "no"


def test_compose_bucket_setup_runs_against_a_real_s3_endpoint(compose, s3_endpoint):  # noqa: F811
    import boto3
    command = compose["services"]["buckets"]["command"]
    assert command[:2] == ["python", "-c"] and "$" not in command[2]      # nothing for compose to interpolate
    env = {**os.environ, "S3_BUCKETS": "scans-t masks-t"}
    for _ in range(2):                                                      # idempotent
        res = subprocess.run([sys.executable, "-c", command[2]], env=env, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
    names = {b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"]}
    assert {"scans-t", "masks-t"} <= names


# --- Kubernetes ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def manifests():
    docs = {}
    for path in yaml_files():
        if path.startswith(K8S + os.sep):
            docs[os.path.basename(path)] = load_all(path)
    return docs


def _by_kind(manifests, kind, name=None):
    found = [d for docs in manifests.values() for d in docs if d["kind"] == kind
             and (name is None or d["metadata"]["name"] == name)]
    assert found, f"no {kind} {name or ''}"
    return found


def _pod_spec(doc):
    if doc["kind"] == "ScaledJob":
        return doc["spec"]["jobTargetRef"]["template"]["spec"]
    if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
        return doc["spec"]["template"]["spec"]
    return None


def test_k8s_manifests_are_complete_and_in_the_kustomization(manifests):
    kustomization = manifests["kustomization.yaml"][0]
    for resource in kustomization["resources"]:
        assert os.path.isfile(os.path.join(K8S, resource)), resource
    left_out = set(manifests) - set(kustomization["resources"]) - {"kustomization.yaml"}
    assert left_out == {"secret.example.yaml", "worker-scaledjob.yaml"}, left_out
    for name, docs in manifests.items():
        for doc in docs:
            if doc.get("kind") == "Kustomization":
                continue
            assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], name
            if doc["kind"] != "Namespace":
                assert doc["metadata"].get("namespace") == "dustspot", (name, doc["metadata"])


def test_k8s_containers_run_real_commands_with_secrets_that_exist(manifests):
    secrets = {d["metadata"]["name"]: set(d["stringData"]) for d in _by_kind(manifests, "Secret")}
    config_maps = {d["metadata"]["name"]: set(d["data"]) for d in _by_kind(manifests, "ConfigMap")}
    lines = []
    for docs in manifests.values():
        for doc in docs:
            spec = _pod_spec(doc)
            if spec is None:
                continue
            for container in spec["containers"]:
                where = f"{doc['kind']} {doc['metadata']['name']}"
                for line in command_line((container.get("command") or []) + (container.get("args") or [])):
                    if "dustspot" in container["image"]:
                        assert invocations(line), f"{where}: the dustspot image runs no dustspot command"
                    assert not check_line(line, where), check_line(line, where)
                    lines.append(line)
                for env in container.get("env", []):
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        assert ref["key"] in secrets.get(ref["name"], ()), f"{where}: secret {ref}"
                for source in container.get("envFrom", []):
                    assert source["configMapRef"]["name"] in config_maps, where
    assert subcommands(lines) == {"worker", "dashboard"}


def test_k8s_worker_deployment_and_keda_scaling(manifests):
    from shared.queues import connect, queue
    queue_key = queue("dustspot", connect("redis://127.0.0.1:1/0")).key     # no connection is made
    assert queue_key == "rq:queue:dustspot"
    worker = _by_kind(manifests, "Deployment", "dustspot-worker")[0]
    spec = _pod_spec(worker)
    assert spec["terminationGracePeriodSeconds"] >= 600
    container = spec["containers"][0]
    assert container["args"][:3] == ["worker", "--threads", "$(DUSTSPOT_THREADS)"]
    assert container["resources"]["requests"]["cpu"] == "1" and container["resources"]["limits"]["memory"]
    config = _by_kind(manifests, "ConfigMap", "dustspot-config")[0]["data"]
    assert config["DUSTSPOT_THREADS"] == "1"

    auths = {d["metadata"]["name"]: d for d in _by_kind(manifests, "TriggerAuthentication")}
    secrets = {d["metadata"]["name"]: d["stringData"] for d in _by_kind(manifests, "Secret")}
    scaled_object = _by_kind(manifests, "ScaledObject")[0]
    scaled_job = _by_kind(manifests, "ScaledJob")[0]
    assert scaled_object["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    for scaler, target in ((scaled_object, container), (scaled_job, _pod_spec(scaled_job)["containers"][0])):
        trigger = scaler["spec"]["triggers"][0]
        assert trigger["type"] == "redis" and trigger["metadata"]["listName"] == queue_key
        assert int(trigger["metadata"]["listLength"]) >= 1
        assert trigger["metadata"]["addressFromEnv"] in config                 # via the container's envFrom
        assert any(s["configMapRef"]["name"] == "dustspot-config" for s in target["envFrom"])
        for ref in auths[trigger["authenticationRef"]["name"]]["spec"]["secretTargetRef"]:
            assert ref["parameter"] == "password" and ref["key"] in secrets[ref["name"]]
    assert "--burst" in _pod_spec(scaled_job)["containers"][0]["args"]
    assert _pod_spec(scaled_job)["terminationGracePeriodSeconds"] >= 600
    with open(os.path.join(K8S, "worker-scaledobject.yaml")) as f:
        assert "SIGTERM" in f.read()                                           # the scale-down caveat


def test_k8s_keda_alternatives_each_find_their_trigger_authentication(manifests):
    # worker-scaledjob.yaml is applied instead of worker-scaledobject.yaml: neither may hold the
    # TriggerAuthentication both need, or the other one fails to authenticate to Redis.
    kustomized = set(yaml.safe_load(open(os.path.join(K8S, "kustomization.yaml")))["resources"])
    for alternative, kind in (("worker-scaledobject.yaml", "ScaledObject"), ("worker-scaledjob.yaml", "ScaledJob")):
        [scaler] = [d for d in manifests[alternative] if d["kind"] == kind]
        names = {t["authenticationRef"]["name"] for t in scaler["spec"]["triggers"] if "authenticationRef" in t}
        assert names, alternative
        for name in names:
            homes = [f for f, docs in manifests.items() if any(
                d["kind"] == "TriggerAuthentication" and d["metadata"]["name"] == name for d in docs)]
            assert homes and not set(homes) & {"worker-scaledobject.yaml", "worker-scaledjob.yaml"}, homes
            assert set(homes) <= kustomized


def test_k8s_dashboard_service_selects_the_dashboard(manifests):
    deployment = _by_kind(manifests, "Deployment", "dustspot-dashboard")[0]
    service = _by_kind(manifests, "Service", "dustspot-dashboard")[0]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    env = {e["name"] for e in _pod_spec(deployment)["containers"][0]["env"]}
    assert {"RQ_DASHBOARD_USERNAME", "RQ_DASHBOARD_PASSWORD", "REDIS_URL"} <= env


# --- Dockerfiles and .dockerignore -----------------------------------------------------------------

def dockerfile(path: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) pairs, continuation lines joined, comments dropped."""
    with open(path) as f:
        text = "".join(line for line in f if not line.lstrip().startswith("#")).replace("\\\n", " ")
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip() if " " in line.strip() else "")
            for line in text.splitlines() if line.strip()]


def _exec_form(rest: str):
    return json.loads(rest) if rest.startswith("[") else ["/bin/sh", "-c", rest]


def dockerignore() -> list[str]:
    with open(os.path.join(REPO, ".dockerignore")) as f:
        patterns = [l.strip() for l in f if l.strip() and not l.lstrip().startswith("#")]
    assert not any(p.startswith("!") for p in patterns), "exceptions (!) are not handled here"
    return patterns


def ignored(rel: str, patterns) -> bool:
    """Docker's rule, as far as this repository needs it: a path is excluded when it or a parent matches."""
    parts = rel.replace(os.sep, "/").split("/")
    for n in range(1, len(parts) + 1):
        sub = "/".join(parts[:n])
        for p in patterns:
            p = p.rstrip("/")
            if fnmatch.fnmatchcase(sub, p) or (p.startswith("**/") and fnmatch.fnmatchcase(parts[n - 1], p[3:])):
                return True
    return False


def test_dockerignore_keeps_out_what_it_must_and_nothing_the_images_need():
    patterns = dockerignore()
    for path in (".venv", ".git", "runs", "out", ".env", "deploy/.env", "shared/__pycache__", "foo.egg-info"):
        assert ignored(path, patterns), path
    for path in ("setup.cfg", "shared/cli.py", "models/dustspot-unet/v1/model.bin", "deploy/worker.Dockerfile"):
        assert not ignored(path, patterns), path


@pytest.mark.parametrize("name", ["worker.Dockerfile", "trainer.Dockerfile"])
def test_dockerfile_copies_exist_and_commands_are_real(name):
    steps = dockerfile(os.path.join(DEPLOY, name))
    patterns = dockerignore()
    copies = 0
    for instruction, rest in steps:
        if instruction in ("COPY", "ADD") and "--from=" not in rest:
            args = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
            args = [a for a in args if not a.startswith("--")]
            for source in args[:-1]:
                path = os.path.join(REPO, source)
                hint = " (the bundled model must be committed: the images bake it in)" if source == "models/" else ""
                assert os.path.exists(path), f"{name}: COPY {source}: not in the repository{hint}"
                assert not ignored(source.rstrip("/"), patterns), f"{name}: COPY {source}: excluded by .dockerignore"
                copies += 1
    assert copies >= 5
    entrypoint = next((_exec_form(r) for i, r in steps if i == "ENTRYPOINT"), [])
    cmd = next((_exec_form(r) for i, r in reversed(steps) if i == "CMD"), [])
    lines = command_line(entrypoint + cmd)
    problems = [p for line in lines for p in check_line(line, name)]
    assert not problems, problems
    first_from = next(r for i, r in steps if i == "FROM")
    base = dict(re.findall(r"ARG (\w+)=(\S+)", "\n".join(f"{i} {r}" for i, r in steps)))
    assert base.get(first_from.split()[0].strip("${}")) == "python:3.11-slim"
    user = [r for i, r in steps if i == "USER"]
    assert user and user[-1].split(":")[0] not in ("0", "root")


def test_worker_image_is_torch_free_with_models_and_a_healthcheck():
    steps = dockerfile(os.path.join(DEPLOY, "worker.Dockerfile"))
    runs = " ".join(r for i, r in steps if i == "RUN")
    assert '".[worker]"' in runs and "trainer]" not in runs and "torch" not in runs.replace("find_spec('torch')", "")
    assert any(i == "COPY" and r.split()[0] == "models/" for i, r in steps)
    env = " ".join(r for i, r in steps if i == "ENV")
    assert "DUSTSPOT_MODELS=/opt/dustspot/models" in env
    assert subcommands(command_line(_exec_form(next(r for i, r in steps if i == "CMD")))) == {"worker"}
    assert any(i == "HEALTHCHECK" for i, _ in steps)


def test_trainer_image_pins_the_torch_of_setup_cfg():
    parser = configparser.ConfigParser()
    parser.read(os.path.join(REPO, "setup.cfg"))
    pins = [p.strip() for p in parser["options.extras_require"]["trainer"].splitlines() if "==" in p]
    runs = " ".join(r for i, r in dockerfile(os.path.join(DEPLOY, "trainer.Dockerfile")) if i == "RUN")
    for pin in pins:
        assert pin in runs, f"trainer.Dockerfile does not install {pin} (setup.cfg's [trainer] pin)"
    assert '".[trainer]"' in runs


def healthcheck_command() -> list[str]:
    steps = dockerfile(os.path.join(DEPLOY, "worker.Dockerfile"))
    rest = next(r for i, r in steps if i == "HEALTHCHECK")
    command = json.loads(rest.split(" CMD ", 1)[1].strip())
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


def test_worker_healthcheck_passes_and_fails_when_it_should(redis_server, registry_root):  # noqa: F811
    from tests.services import free_port
    base = {k: v for k, v in os.environ.items() if not k.startswith("DUSTSPOT_")}
    good = {**base, "REDIS_URL": redis_server, "DUSTSPOT_MODELS": registry_root, "DUSTSPOT_MODEL": "conv"}

    def run(env):
        return subprocess.run(healthcheck_command(), env=env, capture_output=True, text=True, timeout=60)

    res = run(good)
    assert res.returncode == 0, res.stderr
    assert run({**good, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}).returncode != 0
    assert run({**good, "DUSTSPOT_MODEL": "no-such-model"}).returncode != 0
    assert run({**good, "DUSTSPOT_MODEL": ""}).returncode != 0      # the default model is not in this registry


def test_worker_healthcheck_with_a_registry_on_s3(tmp_path, redis_server, s3_endpoint):  # noqa: F811
    import boto3

    from tests.ovmodels import conv_model, publish_model
    local = tmp_path / "local"
    handle = publish_model(conv_model(), str(local), "dustspot-unet", "1")
    boto3.client("s3").create_bucket(Bucket="health-models")
    res = subprocess.run([sys.executable, "-m", "shared.cli", "models", "--registry", "s3://health-models/reg",
                          "publish", handle.xml, "--name", "dustspot-unet", "--version", "1"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DUSTSPOT_")},
           "REDIS_URL": redis_server, "DUSTSPOT_MODELS": "s3://health-models/reg",
           "DUSTSPOT_CACHE": str(tmp_path / "cache")}
    res = subprocess.run(healthcheck_command(), env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    env["DUSTSPOT_MODELS"] = "s3://health-models/elsewhere"
    assert subprocess.run(healthcheck_command(), env=env, capture_output=True, timeout=60).returncode != 0


# --- systemd units -----------------------------------------------------------------------------------

def units() -> dict[str, str]:
    out = {}
    for name in sorted(os.listdir(SYSTEMD)):
        if name.endswith((".service", ".target")):
            with open(os.path.join(SYSTEMD, name)) as f:
                out[name] = f.read()
    return out


def unit_values(text: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(key + "=")]


def exec_start(text: str) -> list[str]:
    """ExecStart as the argv systemd runs: `$$` is a literal `$`, `%%` a literal `%`."""
    (value,) = unit_values(text, "ExecStart")
    return shlex.split(value.replace("$$", "\0").replace("%%", "%").replace("\0", "$"))


def test_systemd_units_run_real_commands_from_the_procfile():
    with open(os.path.join(REPO, "Procfile")) as f:
        procfile = dict(re.findall(r"^([A-Za-z0-9_]+):\s*(.+)$", f.read(), re.M))
    found = units()
    assert {"dustspot.target", "dustspot-worker.target", "dustspot-worker-1.service",
            "dustspot-worker-2.service", "dustspot-dashboard-1.service"} <= set(found)
    for name, text in found.items():
        assert "/work/" not in text and REPO not in text, f"{name}: a path of the machine that exported it"
        if not name.endswith(".service"):
            continue
        argv = exec_start(text)
        assert argv[:2] == ["/bin/sh", "-c"] and argv[2].startswith("exec ")
        assert not check_line(argv[2], name), check_line(argv[2], name)
        process = name[len("dustspot-"):].rsplit("-", 1)[0]
        assert argv[2] == "exec " + procfile[process].strip()
        assert unit_values(text, "WorkingDirectory") == ["/opt/dustspot"]
        assert unit_values(text, "EnvironmentFile") == ["-/opt/dustspot/.env"]
        assert unit_values(text, "User") == ["dustspot"]
        assert int(unit_values(text, "TimeoutStopSec")[0]) >= 600


def test_systemd_units_are_what_the_documented_honcho_export_makes(tmp_path):
    with open(OPERATIONS) as f:
        text = f.read().replace("\\\n", " ")
    (line,) = [l for l in text.splitlines() if l.strip().startswith("honcho export systemd")]
    args = shlex.split(line.replace("$PWD", REPO))
    location = args.index("deploy/systemd")
    args[location] = str(tmp_path / "units")
    res = subprocess.run([sys.executable, "-m", "honcho", *args[1:]], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    made = {name: (tmp_path / "units" / name).read_text() for name in os.listdir(tmp_path / "units")}
    assert made == units()


def test_systemd_units_pass_systemd_analyze_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed here: the units' syntax is not verified by systemd")
    for name in units():
        shutil.copy(os.path.join(SYSTEMD, name), tmp_path / name)
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", *sorted(str(tmp_path / n) for n in units())],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_systemd_worker_unit_command_runs_a_worker_that_takes_sigterm(tmp_path, redis_server,  # noqa: F811
                                                                      registry_root):
    """The worker unit's ExecStart, with its environment, as systemd would start it (minus systemd)."""
    from redis import Redis
    text = units()["dustspot-worker-1.service"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUSTSPOT_")}
    for value in unit_values(text, "Environment"):
        key, _, val = value.partition("=")
        env[key] = val
    # The app root is this checkout's environment; .env's settings (EnvironmentFile=) override.
    env["PATH"] = env["PATH"].replace("/opt/dustspot/.venv/bin", os.path.dirname(sys.executable))
    env.update(REDIS_URL=redis_server, DUSTSPOT_MODELS=registry_root, DUSTSPOT_MODEL="conv", DUSTSPOT_THREADS="1")
    redis = Redis.from_url(redis_server)
    before = set(redis.smembers("rq:workers"))
    proc = subprocess.Popen(exec_start(text), env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not set(redis.smembers("rq:workers")) - before and proc.poll() is None:
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert set(redis.smembers("rq:workers")) - before, "the worker did not register"
        with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        assert b"worker" in argv and any(a.endswith(b"dustspot") for a in argv), argv   # sh exec'd dustspot
        proc.send_signal(signal.SIGTERM)                 # what systemctl stop sends (KillMode=mixed)
        log = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log[-3000:]


# --- docs/operations.md --------------------------------------------------------------------------------

def operations_lines() -> list[tuple[int, str]]:
    """(line number, text) of every line in a code block, and of every inline `dustspot ...` span."""
    with open(OPERATIONS) as f:
        lines = f.read().splitlines()
    out, in_block, pending = [], False, ""
    for number, line in enumerate(lines, 1):
        if line.strip().startswith("```"):
            in_block = not in_block
            continue
        if in_block:
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            out.append((number, pending + line))
            pending = ""
        else:
            out += [(number, span) for span in re.findall(r"`(dustspot [^`]+)`", line)]
    return out


def test_operations_guide_commands_match_the_cli():
    lines = operations_lines()
    problems = [p for number, line in lines for p in check_line(line, f"docs/operations.md:{number}")]
    assert not problems, "\n".join(problems)
    covered = subcommands(line for _, line in lines)
    assert {"enqueue", "status", "retry-failed", "models", "worker", "dashboard", "export", "evaluate"} <= covered
    text = open(OPERATIONS).read()
    for needed in ("--pin-model", "--force", "docs/performance.md", "dustspot retry-failed BATCH",
                   "dustspot status BATCH --watch", "promote"):
        assert needed in text, needed


def test_operations_guide_names_files_that_exist():
    text = open(OPERATIONS).read()
    for path in sorted(set(re.findall(r"`((?:deploy|docs)/[^`\s]*)`", text))):
        if path == "docs/performance.md":
            continue                                  # the benchmark's page, written with the benchmark
        assert os.path.exists(os.path.join(REPO, path.rstrip("/"))), path


# --- packaging: what `pip install .[worker]` gives ----------------------------------------------------------

def build_context(dest) -> str:
    """The repository as `docker build` sees it (.dockerignore applied): what the images install from."""
    patterns = dockerignore()

    def skip(folder, names):
        rel = os.path.relpath(folder, REPO)
        return [n for n in names if ignored(os.path.normpath(os.path.join(rel, n)), patterns)]

    shutil.copytree(REPO, dest, ignore=skip)
    return str(dest)


def venv_env(venv) -> dict:
    dev_bin = os.path.dirname(sys.executable)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != dev_bin)
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME") and not k.startswith("DUSTSPOT_")}
    env.update(PATH=os.path.join(venv, "bin") + os.pathsep + path, VIRTUAL_ENV=str(venv))
    return env


class BundledModelMissing(AssertionError):
    pass


def test_non_editable_install_ships_the_bundled_model(tmp_path):
    from tests.ovmodels import conv_model, publish_model
    context = build_context(tmp_path / "context")
    if not os.path.isfile(os.path.join(context, "models", "dustspot-unet", "latest")):
        publish_model(conv_model(), os.path.join(context, "models"), "dustspot-unet", "stand-in")
        shutil.rmtree(os.path.join(context, "models", ".scratch"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    wheels = tmp_path / "wheels"
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                          "-w", str(wheels), context], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    (wheel,) = wheels.iterdir()
    res = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                          "--no-deps", str(wheel)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    probe = "from shared import registry; print(registry.resolve().version)"
    res = subprocess.run([str(venv / "bin" / "python"), "-c", probe],
                         env=venv_env(venv), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise BundledModelMissing(res.stderr[-2000:])


@pytest.fixture(scope="module")
def worker_venv(tmp_path_factory):
    """SLOW: a fresh virtual environment with `pip install <build context>[worker]` (real dependencies)."""
    if os.environ.get("DUSTSPOT_SKIP_VENV_TESTS") == "1":
        pytest.skip("DUSTSPOT_SKIP_VENV_TESTS=1: the fresh-venv install of .[worker] is not tested")
    root = tmp_path_factory.mktemp("worker-venv")
    context = build_context(root / "context")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    res = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", context + "[worker]"],
                         env=venv_env(venv), cwd=root, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return venv


def in_venv(venv, args, cwd, **env):
    return subprocess.run(args, env={**venv_env(venv), **env}, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_fresh_venv_worker_install_has_no_torch_and_a_working_cli(worker_venv, tmp_path):
    python = str(worker_venv / "bin" / "python")
    res = in_venv(worker_venv, [python, "-c", "import torch"], tmp_path)
    assert res.returncode != 0 and "No module named 'torch'" in res.stderr
    res = in_venv(worker_venv, [python, "-m", "pip", "check"], tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    dustspot = str(worker_venv / "bin" / "dustspot")
    assert shutil.which("dustspot", path=venv_env(worker_venv)["PATH"]) == dustspot
    res = in_venv(worker_venv, [dustspot, "worker", "--help"], tmp_path)
    assert res.returncode == 0 and "--pin-model" in res.stdout, res.stderr
    for command in ("enqueue", "status", "retry-failed", "dashboard", "segment", "models"):
        res = in_venv(worker_venv, [dustspot, command, "--help"], tmp_path)
        assert res.returncode == 0, (command, res.stderr)
    res = in_venv(worker_venv, [dustspot, "--help"], tmp_path)
    assert res.returncode == 0 and all(name in res.stdout for name in COMMANDS), res.stdout
    res = in_venv(worker_venv, [dustspot, "train", str(tmp_path), "--run", str(tmp_path / "run"), "--steps", "1"],
                  tmp_path)
    assert res.returncode != 0 and "torch" in res.stdout + res.stderr     # training needs the trainer extra


def test_fresh_venv_segment_with_a_published_model(worker_venv, tmp_path):
    from tests.ovmodels import conv_model, publish_model
    registry = tmp_path / "registry"
    publish_model(conv_model(), str(registry), "tiny")
    out = tmp_path / "out"
    res = in_venv(worker_venv, [str(worker_venv / "bin" / "dustspot"), "segment",
                                os.path.join(REPO, "examples", "scans", "rocket.jpg"), "--out", str(out),
                                "--registry", str(registry), "--model", "tiny", "--threads", "1", "--quiet"], tmp_path)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    report = json.loads((out / "rocket.json").read_text())
    assert report["status"] == "ok" and report["model"]["name"] == "tiny"
    assert (out / "rocket.mask.png").stat().st_size > 0


def test_fresh_venv_segment_with_the_bundled_model_as_in_the_worker_image(worker_venv, tmp_path):
    """The default model, found the way the worker image finds it (DUSTSPOT_MODELS=<copy of models/>)."""
    if not os.path.isfile(DEFAULT_MODEL_POINTER):
        pytest.skip(f"no bundled default model yet ({os.path.relpath(DEFAULT_MODEL_POINTER, REPO)} missing)")
    out = tmp_path / "out"
    res = in_venv(worker_venv, [str(worker_venv / "bin" / "dustspot"), "segment",
                                os.path.join(REPO, "examples", "scans", "rocket.jpg"), "--out", str(out),
                                "--threads", "1", "--quiet"], tmp_path,
                  DUSTSPOT_MODELS=os.path.join(REPO, "models"))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    report = json.loads((out / "rocket.json").read_text())
    assert report["status"] == "ok" and report["model"]["name"] == "dustspot-unet"
