"""The deployment files (cluster/, docker/) parse, pass Ray's own launcher validation, and agree with each
other, with pyproject.toml and with the CLI.

Nothing here needs a Docker engine, a cloud account or a Kubernetes cluster: files are parsed, the
launcher YAMLs go through the autoscaler's config preparation and schema (no cloud is contacted), and
cross-file facts are compared: image names, Ray/Python/torch versions, the install line, Redis durability
and password settings, and that the dashboard and Redis are never exposed on public interfaces.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import time
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
DOCKER = ROOT / "docker"
KUBERAY = CLUSTER / "kuberay"
LAUNCHERS = ("aws.yaml", "onprem.yaml")
DOCKERFILES = {"docker/Dockerfile": "cpu", "docker/Dockerfile.gpu": "gpu"}
IMAGE_REPO = "germinator-dist/ray"
RAY_CONTAINERS = ("ray-head", "ray-worker")
REDIS_URL_ENV = "GERMINATOR_REDIS_URL"
REDIS_PASSWORD_ENV = "GERMINATOR_REDIS_PASSWORD"
LAUNCHER_COMMANDS = (
    "initialization_commands",
    "setup_commands",
    "head_setup_commands",
    "worker_setup_commands",
    "head_start_ray_commands",
    "worker_start_ray_commands",
)

# Field names of the KubeRay CRDs (ray-project/kuberay, ray-operator/apis/ray/v1/*_types.go): a misspelt
# field would be dropped by the API server without a word.
RAYCLUSTER_SPEC_FIELDS = {
    "headGroupSpec", "workerGroupSpecs", "rayVersion", "enableInTreeAutoscaling", "autoscalerOptions",
    "headServiceAnnotations", "suspend", "gcsFaultToleranceOptions",
}  # fmt: skip
HEAD_GROUP_FIELDS = {"serviceType", "headService", "enableIngress", "rayStartParams", "template"}
WORKER_GROUP_FIELDS = {
    "groupName", "replicas", "minReplicas", "maxReplicas", "numOfHosts", "rayStartParams", "template",
    "scaleStrategy",
}  # fmt: skip
AUTOSCALER_OPTION_FIELDS = {
    "resources", "image", "imagePullPolicy", "env", "envFrom", "volumeMounts", "securityContext",
    "idleTimeoutSeconds", "upscalingMode",
}  # fmt: skip
RAYJOB_SPEC_FIELDS = {
    "activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate", "metadata",
    "clusterSelector", "submitterConfig", "managedBy", "deletionStrategy", "entrypoint", "runtimeEnvYAML",
    "jobId", "submissionMode", "entrypointResources", "entrypointNumCpus", "entrypointNumGpus",
    "ttlSecondsAfterFinished", "shutdownAfterJobFinishes", "suspend", "schedule",
}  # fmt: skip


# --- helpers ------------------------------------------------------------------------------------------


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirement(name: str) -> Requirement:
    reqs = [Requirement(r) for r in _pyproject()["project"]["dependencies"]]
    (req,) = [r for r in reqs if r.name == name]
    return req


def _yaml_files() -> list[Path]:
    return sorted(p for d in (CLUSTER, DOCKER) for p in d.rglob("*") if p.suffix in (".yaml", ".yml"))


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _launcher(name: str) -> dict:
    (doc,) = _docs(CLUSTER / name)
    return doc


def _compose() -> dict:
    (doc,) = _docs(DOCKER / "compose.yaml")
    return doc


def _kuberay() -> list[dict]:
    return [d for p in sorted(KUBERAY.glob("*.yaml")) for d in _docs(p)]


def _from_line(dockerfile: str) -> re.Match:
    froms = re.findall(r"^FROM\s+(\S+)\s*$", (ROOT / dockerfile).read_text(), re.M)
    assert len(froms) == 1, f"{dockerfile}: expected one FROM line, got {froms}"
    m = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)-(cpu|gpu|cu\d+)", froms[0])
    assert m, f"{dockerfile}: FROM {froms[0]} is not rayproject/ray:<ray>-py<XY>-<cpu|gpu|cuXX>"
    return m


def _project_images() -> dict[str, str]:
    """Dockerfile -> image tag, as docker/compose.yaml builds them."""
    images: dict[str, str] = {}
    for name, svc in _compose()["services"].items():
        if "build" in svc:
            build = svc["build"]
            assert build["context"] == "..", f"compose service {name}: the build context is not the repo root"
            images.setdefault(build["dockerfile"], svc["image"])
            assert images[build["dockerfile"]] == svc["image"], f"compose service {name}: image"
    return images


def _cpu_gpu_images() -> tuple[str, str]:
    images = _project_images()
    return images["docker/Dockerfile"], images["docker/Dockerfile.gpu"]


def _walk(node, key: str):
    """Every value stored under ``key`` anywhere in a nested YAML document."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from _walk(v, key)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item, key)


def _pod_specs(doc: dict) -> list[dict]:
    """Pod specs of a RayCluster/RayJob (head and worker groups) or of a Deployment."""
    if doc["kind"] == "Deployment":
        return [doc["spec"]["template"]["spec"]]
    spec = doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]
    groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
    return [g["template"]["spec"] for g in groups]


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def _redis_start(command: str) -> list[str]:
    """The tokens of the `germinator-redis-server ...` call in a launcher command, up to the next `;`."""
    start = command.index("germinator-redis-server")
    tokens = shlex.split(command[start : command.index(";", start)])
    assert tokens[0] == "germinator-redis-server"
    return tokens


def _option_values(tokens: list[str], option: str) -> list[str]:
    i = tokens.index(option)
    values = []
    for tok in tokens[i + 1 :]:
        if tok.startswith("--"):
            break
        values.append(tok)
    return values


# --- everything parses -----------------------------------------------------------------------------------


def test_the_deployment_files_exist():
    names = {str(p.relative_to(ROOT)) for p in _yaml_files()}
    assert {
        "cluster/aws.yaml",
        "cluster/onprem.yaml",
        "cluster/kuberay/raycluster.yaml",
        "cluster/kuberay/redis.yaml",
        "cluster/kuberay/rayjob.yaml",
        "docker/compose.yaml",
    } <= names
    for f in ("docker/Dockerfile", "docker/Dockerfile.gpu", "docker/redis.conf", "cluster/README.md"):
        assert (ROOT / f).is_file(), f


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_parses(path):
    docs = _docs(path)
    assert docs, f"{path}: no YAML document"
    assert all(isinstance(d, dict) for d in docs), f"{path}: a document is not a mapping"


# --- the cluster launcher configs ----------------------------------------------------------------------


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_config_passes_rays_validation(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = _launcher(name)
    prepared = prepare_config(copy.deepcopy(raw))  # fills in defaults; contacts no cloud
    validate_config(prepared)  # ray-schema.json plus the autoscaler's own checks
    head = prepared["head_node_type"]
    for node_type, cfg in prepared["available_node_types"].items():
        assert 0 <= cfg["min_workers"] <= cfg["max_workers"], (name, node_type)
        if node_type != head:
            assert cfg["max_workers"] <= prepared["max_workers"], (name, node_type)


def test_aws_has_a_head_a_cpu_and_a_gpu_worker_type_for_the_autoscaler():
    cfg = _launcher("aws.yaml")
    cpu_image, gpu_image = _cpu_gpu_images()
    types = cfg["available_node_types"]
    workers = {k: v for k, v in types.items() if k != cfg["head_node_type"]}
    gpu = {k for k, v in workers.items() if v["resources"].get("GPU", 0) > 0}
    cpu = set(workers) - gpu
    assert gpu and cpu, f"need a CPU and a GPU worker type, got {sorted(workers)}"
    for k, v in workers.items():
        assert "min_workers" in v and "max_workers" in v and v["max_workers"] >= 1, k
    assert cfg["docker"]["image"] == cpu_image
    for k in gpu:
        assert types[k]["docker"]["worker_image"] == gpu_image, k
    for k in cpu:
        assert types[k].get("docker", {}).get("worker_image", cpu_image) == cpu_image, k


def test_onprem_lists_its_hosts_and_uses_the_cpu_image():
    cfg = _launcher("onprem.yaml")
    assert cfg["provider"]["type"] == "local"
    hosts = [cfg["provider"]["head_ip"], *cfg["provider"]["worker_ips"]]
    assert len(hosts) >= 3 and len(set(hosts)) == len(hosts)
    assert all(ipaddress.ip_address(h).is_private for h in hosts)
    assert cfg["docker"]["image"] == _cpu_gpu_images()[0]


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_commands_are_valid_shell(name):
    cfg = _launcher(name)
    for section in LAUNCHER_COMMANDS:
        for command in cfg.get(section, []):
            r = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
            assert r.returncode == 0, f"{name} {section}: {command!r}: {r.stderr}"


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_installs_this_checkout_and_starts_nothing_else_in_setup(name):
    cfg = _launcher(name)
    mounts = cfg["file_mounts"]
    (code,) = [remote for remote, local in mounts.items() if local == "."]
    (secrets,) = [remote for remote, local in mounts.items() if local == "cluster/secrets"]
    setup = cfg["setup_commands"]
    assert f"pip install --no-cache-dir --no-deps {code}" in setup
    sourced = f"{secrets}/redis.env".replace("/home/ray/", "~/")  # the container user's home
    assert any(f". {sourced}" in c for c in setup), "redis.env is not exported to the node's shells"
    assert ".gitignore" in cfg["rsync_filter"]  # keeps .venv/ and cluster/secrets/ out of the code mount
    assert "secrets/" in (CLUSTER / ".gitignore").read_text().split()
    starts = re.compile(r"\b(ray start|redis-server|germinator-redis-server|nohup)\b")
    for section in ("setup_commands", "head_setup_commands", "worker_setup_commands"):
        for command in cfg.get(section, []):
            assert not starts.search(command), f"{section} starts something: {command}"


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_binds_dashboard_and_redis_privately(name):
    text = (CLUSTER / name).read_text()
    assert "0.0.0.0" not in text and "--ray-debugger-external" not in text
    cfg = _launcher(name)
    head_start = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "--port=6379" in head_start  # Ray's GCS
    (redis_cmd,) = [c for c in cfg["head_start_ray_commands"] if "germinator-redis-server" in c]
    tokens = _redis_start(redis_cmd)
    assert _option_values(tokens, "--port") == ["6380"]
    bind = _option_values(tokens, "--bind")
    assert "127.0.0.1" in bind and len(bind) == 2, bind
    (private,) = [b for b in bind if b != "127.0.0.1"]
    if name == "onprem.yaml":
        assert private == cfg["provider"]["head_ip"]
    else:
        assert private == "$(hostname -I | awk '{print $1}')"
    # The data directory is the named volume on the head, which the image prepares for the ray user.
    (data_dir,) = _option_values(tokens, "--dir")
    assert any(o.endswith(f":{data_dir}") for o in cfg["docker"]["head_run_options"])
    for dockerfile in DOCKERFILES:
        assert f"mkdir -p {data_dir}" in (ROOT / dockerfile).read_text()


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_nodes_get_the_redis_url_the_head_serves(name):
    cfg = _launcher(name)
    head = cfg["provider"].get("head_ip", "$(hostname -I | awk '{print $1}')")
    urls = {
        "head_start": " ".join(cfg["head_start_ray_commands"]),
        "head_setup": " ".join(cfg["head_setup_commands"]),
        "worker_start": " ".join(cfg["worker_start_ray_commands"]),
    }
    found = {k: re.findall(r"\$\{GERMINATOR_REDIS_URL:-(redis://.+?/0)\}", v) for k, v in urls.items()}
    assert found["head_start"] == [f"redis://{head}:6380/0"], found
    assert found["head_setup"] == [f"redis://{head}:6380/0"], found
    assert found["worker_start"] == ["redis://$RAY_HEAD_IP:6380/0"], found
    assert "--address=$RAY_HEAD_IP:6379" in urls["worker_start"]


# --- docker/ against pyproject.toml ----------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_matches_pyproject(dockerfile):
    text = (ROOT / dockerfile).read_text()
    m = _from_line(dockerfile)
    ray_version, py = m.group(1), f"{m.group(2)}.{m.group(3)}"
    platform = m.group(4)
    assert (platform == "cpu") == (DOCKERFILES[dockerfile] == "cpu"), (dockerfile, platform)
    ray_req = _requirement("ray")
    assert ray_req.specifier.contains(Version(ray_version)), f"FROM ray {ray_version} vs pyproject {ray_req}"
    assert SpecifierSet(_pyproject()["project"]["requires-python"]).contains(Version(py))
    # The build-time checks assert the same versions.
    assert f"sys.version_info[:2] == ({m.group(2)}, {m.group(3)})" in text
    major_minor = ".".join(ray_version.split(".")[:2])
    assert f"ray.__version__.startswith('{major_minor}.')" in text
    assert str(ray_req.specifier) == f"=={major_minor}.*"
    # torch as pyproject pins it (the CPU image from PyTorch's CPU index, the GPU image with CUDA).
    torch_req = _requirement("torch")
    assert f'"{torch_req}"' in text, f"{dockerfile} does not install {torch_req}"
    # The install line installs this project from the copied sources.
    assert re.search(r"^RUN pip install --no-cache-dir /app\b", text, re.M)
    copied = dict(re.findall(r"^COPY --chown=ray:users (.+?) (\S+)$", text, re.M))
    readme = _pyproject()["project"]["readme"]
    assert copied.get(f"pyproject.toml {readme}") == "/app/"
    assert copied.get("germinator_dist") == "/app/germinator_dist"
    assert _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"] == ["germinator_dist*"]
    assert "germinator-dist" in _pyproject()["project"]["scripts"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerignore_lets_in_what_the_dockerfile_copies(dockerfile):
    ignore = (ROOT / f"{dockerfile}.dockerignore").read_text().split("\n")
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore  # everything else (.venv/, .git/, outputs) stays out of the build context
    for sources in re.findall(r"^COPY (?:--chown=\S+ )?(.+) \S+$", (ROOT / dockerfile).read_text(), re.M):
        for src in sources.split():
            assert src in allowed, f"{dockerfile} copies {src}, which its .dockerignore leaves out"


def test_image_names_agree_everywhere():
    version = _pyproject()["project"]["version"]
    images = _project_images()
    assert set(images) == set(DOCKERFILES), images
    for dockerfile, image in images.items():
        m = _from_line(dockerfile)
        assert image == f"{IMAGE_REPO}:{version}-py{m.group(2)}{m.group(3)}-{DOCKERFILES[dockerfile]}"
        build = f"docker build -f {dockerfile} -t {image} ."
        assert build in (ROOT / dockerfile).read_text(), f"{dockerfile}: its header should say `{build}`"
        assert build in (CLUSTER / "README.md").read_text(), f"cluster/README.md should say `{build}`"
    cpu_image, gpu_image = _cpu_gpu_images()
    redis_image = _compose()["services"]["redis"]["image"]
    # Every image named in cluster/ is a project image or the compose file's Redis image.
    for path in [CLUSTER / n for n in LAUNCHERS] + sorted(KUBERAY.glob("*.yaml")):
        for doc in _docs(path):
            for key in ("image", "head_image", "worker_image"):
                for image in _walk(doc, key):
                    assert image in (cpu_image, gpu_image, redis_image), f"{path.name}: {key} {image}"
    # KubeRay: Ray containers run the project image (GPU groups the GPU one); Redis the compose one.
    for doc in _kuberay():
        if doc["kind"] in ("RayCluster", "RayJob"):
            spec = doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]
            assert spec["rayVersion"] == _from_line("docker/Dockerfile").group(1)
        if doc["kind"] not in ("RayCluster", "RayJob", "Deployment"):
            continue
        for pod in _pod_specs(doc):
            for c in pod["containers"]:
                limits = c.get("resources", {}).get("limits", {})
                if c["name"] in RAY_CONTAINERS:
                    want = gpu_image if "nvidia.com/gpu" in limits else cpu_image
                    assert c["image"] == want, (doc["metadata"]["name"], c["name"], c["image"])
                else:
                    assert c["image"] == redis_image, (doc["metadata"]["name"], c["name"])


# --- Redis: durable, password, private -------------------------------------------------------------------


def _redis_conf() -> dict[str, str]:
    conf = {}
    for line in (DOCKER / "redis.conf").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            conf[key.lower()] = value.strip().strip('"')
    return conf


def test_redis_conf_is_durable_and_has_no_secret():
    conf = _redis_conf()
    assert conf["appendonly"] == "yes"
    assert conf["appendfsync"] == "always"
    assert conf["maxmemory-policy"] == "noeviction"
    assert conf["protected-mode"] == "yes"
    assert "requirepass" not in conf  # added at start from GERMINATOR_REDIS_PASSWORD
    assert "bind" not in conf and "dir" not in conf  # given where Redis is started


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_image_installs_the_redis_starter_the_launchers_call(dockerfile):
    text = (ROOT / dockerfile).read_text()
    assert "COPY docker/redis-entrypoint.sh /usr/local/bin/germinator-redis-server" in text
    (conf_path,) = re.findall(r"^ENV GERMINATOR_REDIS_CONF=(\S+)$", text, re.M)
    assert f"COPY docker/redis.conf {conf_path}" in text
    assert re.search(r"apt-get install .*\bredis-server\b.*\bredis-tools\b", text)


def test_compose_publishes_only_on_loopback():
    compose = _compose()
    published = []
    for name, svc in compose["services"].items():
        assert svc.get("network_mode") != "host" and not svc.get("privileged"), name
        for port in svc.get("ports", []):
            if isinstance(port, dict):
                host_ip = port.get("host_ip")
            else:
                parts = str(port).split(":")
                assert len(parts) == 3, f"{name}: port {port!r} does not name the host address"
                host_ip = parts[0]
            assert host_ip == "127.0.0.1", f"{name}: port {port!r} is published beyond loopback"
            published.append((name, port))
    assert ("ray-head", "127.0.0.1:8265:8265") in published
    assert any(name == "redis" for name, _ in published)


def test_compose_redis_is_durable_and_needs_a_password():
    compose = _compose()
    redis = compose["services"]["redis"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in redis["volumes"]}
    (script_in,) = [p for p in redis["entrypoint"] if p.endswith("redis-entrypoint.sh")]
    assert mounts[script_in] == "./redis-entrypoint.sh"
    assert mounts[str(Path(script_in).with_name("redis.conf"))] == "./redis.conf"
    assert redis["command"] == ["--dir", "/data"]
    assert mounts["/data"] in compose["volumes"]  # a named volume, not the container's layer
    required = f"${{{REDIS_PASSWORD_ENV}:?"
    assert redis["environment"][REDIS_PASSWORD_ENV].startswith(required)
    for name, svc in compose["services"].items():
        if name == "redis":
            continue
        env = svc["environment"]
        assert env[REDIS_URL_ENV] == "redis://redis:6379/0", name
        assert env[REDIS_PASSWORD_ENV].startswith(required), name


def test_kuberay_manifests_use_known_fields():
    for doc in _kuberay():
        if doc["kind"] not in ("RayCluster", "RayJob"):
            continue
        assert doc["apiVersion"] == "ray.io/v1"
        spec = doc["spec"]
        if doc["kind"] == "RayJob":
            assert set(spec) <= RAYJOB_SPEC_FIELDS, set(spec) - RAYJOB_SPEC_FIELDS
            assert spec["submissionMode"] in ("K8sJobMode", "HTTPMode", "InteractiveMode")
            spec = spec["rayClusterSpec"]
        assert set(spec) <= RAYCLUSTER_SPEC_FIELDS, set(spec) - RAYCLUSTER_SPEC_FIELDS
        assert set(spec["autoscalerOptions"]) <= AUTOSCALER_OPTION_FIELDS
        assert spec["autoscalerOptions"]["upscalingMode"] in ("Default", "Aggressive", "Conservative")
        head = spec["headGroupSpec"]
        assert set(head) <= HEAD_GROUP_FIELDS and {"rayStartParams", "template"} <= set(head)
        for group in spec["workerGroupSpecs"]:
            assert set(group) <= WORKER_GROUP_FIELDS, set(group) - WORKER_GROUP_FIELDS
            assert {"groupName", "minReplicas", "maxReplicas", "rayStartParams", "template"} <= set(group)
            replicas = group.get("replicas", 0)
            assert group["minReplicas"] <= replicas <= group["maxReplicas"], group["groupName"]


def test_raycluster_autoscales_cpu_and_gpu_groups():
    (rc,) = [d for d in _kuberay() if d["kind"] == "RayCluster"]
    spec = rc["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    gpu_groups = [
        g
        for g in spec["workerGroupSpecs"]
        if any("nvidia.com/gpu" in c["resources"]["limits"] for c in g["template"]["spec"]["containers"])
    ]
    assert gpu_groups and len(gpu_groups) < len(spec["workerGroupSpecs"])
    assert all(g["maxReplicas"] > g["minReplicas"] for g in spec["workerGroupSpecs"])


def test_kuberay_exposes_nothing_and_commits_no_secret():
    redis_svc = None
    for doc in _kuberay():
        assert doc["kind"] not in ("Secret", "Ingress"), doc["kind"]
        if doc["kind"] == "Service":
            assert doc["spec"].get("type", "ClusterIP") == "ClusterIP"
            redis_svc = doc
        if doc["kind"] in ("RayCluster", "RayJob"):
            spec = doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]
            assert spec["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP"
            assert not spec["headGroupSpec"].get("enableIngress", False)
            assert "dashboard-host" not in spec["headGroupSpec"]["rayStartParams"]  # KubeRay's in-pod default
    assert redis_svc is not None
    (policy,) = [d for d in _kuberay() if d["kind"] == "NetworkPolicy"]
    assert policy["spec"]["podSelector"]["matchLabels"] == redis_svc["spec"]["selector"]
    sources = [s["podSelector"]["matchLabels"] for rule in policy["spec"]["ingress"] for s in rule["from"]]
    assert {"ray.io/is-ray-node": "yes"} in sources


def test_kuberay_redis_matches_docker_and_every_ray_pod_can_reach_it():
    docs = _kuberay()
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and "redis.conf" in d["data"]]
    assert cm["data"]["redis.conf"] == (DOCKER / "redis.conf").read_text()
    assert cm["data"]["redis-entrypoint.sh"] == (DOCKER / "redis-entrypoint.sh").read_text()
    (deploy,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = deploy["spec"]["template"]["spec"]
    (redis,) = pod["containers"]
    env = _env(redis)
    secret = env[REDIS_PASSWORD_ENV]["valueFrom"]["secretKeyRef"]
    assert redis["command"][-1].endswith("/redis-entrypoint.sh")
    assert env["GERMINATOR_REDIS_CONF"]["value"] == str(Path(redis["command"][-1]).with_name("redis.conf"))
    assert redis["args"] == ["--dir", "/data"]
    mounts = {m["mountPath"]: m["name"] for m in redis["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    (pvc,) = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    assert volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert volumes[mounts[env["TMPDIR"]["value"]]]["emptyDir"]["medium"] == "Memory"
    (svc,) = [d for d in docs if d["kind"] == "Service"]
    want_url = f"redis://{svc['metadata']['name']}:{svc['spec']['ports'][0]['port']}/0"
    for doc in docs:
        if doc["kind"] not in ("RayCluster", "RayJob"):
            continue
        for ray_pod in _pod_specs(doc):
            for c in ray_pod["containers"]:
                ray_env = _env(c)
                assert ray_env[REDIS_URL_ENV]["value"] == want_url, (doc["metadata"]["name"], c["name"])
                assert ray_env[REDIS_PASSWORD_ENV]["valueFrom"]["secretKeyRef"] == secret


def test_rayjob_runs_germinator_dist_from_a_configmap_spec():
    docs = _docs(KUBERAY / "rayjob.yaml")
    (job,) = [d for d in docs if d["kind"] == "RayJob"]
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    (head,) = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"]
    (mount,) = head["volumeMounts"]
    entry = shlex.split(spec["entrypoint"])
    assert entry[0] == "bash" and Path(entry[1]).parent == Path(mount["mountPath"])
    (volume,) = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["volumes"]
    files = {
        item["path"]: (src["configMap"]["name"], item["key"])
        for src in volume["projected"]["sources"]
        for item in src["configMap"]["items"]
    }
    script_cm, script_key = files[Path(entry[1]).name]
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == script_cm]
    script = cm["data"][script_key]
    r = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"germinator-dist submit {mount['mountPath']}/job.yaml" in script
    # The spec ConfigMap is made from the example, as cluster/README.md and the header say.
    spec_cm, spec_key = files["job.yaml"]
    make = f"kubectl create configmap {spec_cm} --from-file={spec_key}=examples/digits.yaml"
    assert make in (KUBERAY / "rayjob.yaml").read_text() and make in (CLUSTER / "README.md").read_text()
    assert (ROOT / "examples" / "digits.yaml").is_file()


def test_no_literal_password_in_the_deployment_files():
    files = [*_yaml_files(), DOCKER / "redis.conf", *(ROOT / d for d in DOCKERFILES)]
    for path in files:
        text = path.read_text()
        assert not re.search(r"rediss?://[^/\s@]*:[^/\s@$*]+@", text), f"{path}: password in a URL"
        for m in re.finditer(rf"(?<!{{){REDIS_PASSWORD_ENV}\s*[=:]\s*(\S+)", text):
            assert m.group(1).lstrip("\"'").startswith(("$", "...")), f"{path}: {m.group(0)}"


# --- the Redis starter (docker/redis-entrypoint.sh) --------------------------------------------------------


def _run_starter(tmp_path: Path, password: str | None, *args: str) -> subprocess.CompletedProcess:
    """Run the starter with a stand-in redis-server that records its argv, env and config file."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    fake = bindir / "redis-server"
    fake.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > "{tmp_path}/argv"\n'
        f'env > "{tmp_path}/env"\n'
        f'cp "$1" "{tmp_path}/conf"\n'
        f'stat -c %a "$1" > "{tmp_path}/mode"\n'
    )
    fake.chmod(0o755)
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "TMPDIR": str(tmp_path), "REDISCLI_AUTH": "x" * 20}
    env["GERMINATOR_REDIS_CONF"] = str(DOCKER / "redis.conf")
    if password is not None:
        env[REDIS_PASSWORD_ENV] = password
    script = DOCKER / "redis-entrypoint.sh"
    return subprocess.run(["sh", str(script), *args], env=env, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(
    "password, says",
    [
        (None, "is empty"),
        ("", "is empty"),
        ("0123456789abcde", "shorter than 16"),
        ('abc"def 0123456789', "only"),
    ],
)
def test_redis_starter_refuses_a_missing_or_bad_password(tmp_path, password, says):
    r = _run_starter(tmp_path, password)
    assert r.returncode == 2 and says in r.stderr, r.stderr
    assert not (tmp_path / "argv").exists()  # redis-server never ran
    if password:
        assert password not in r.stderr


def test_redis_starter_passes_the_password_in_a_private_file_only(tmp_path):
    password = "f" * 16 + "0123456789abcdef"
    r = _run_starter(tmp_path, password, "--port", "6380", "--bind", "10.0.0.10", "127.0.0.1")
    assert r.returncode == 0, r.stderr
    argv = (tmp_path / "argv").read_text().split("\n")
    assert argv[1:6] == ["--port", "6380", "--bind", "10.0.0.10", "127.0.0.1"]
    assert password not in (tmp_path / "argv").read_text()
    assert password not in (tmp_path / "env").read_text()  # neither GERMINATOR_... nor REDISCLI_AUTH
    assert "REDISCLI_AUTH" not in (tmp_path / "env").read_text()
    conf = (tmp_path / "conf").read_text()
    assert conf.startswith((DOCKER / "redis.conf").read_text())
    assert conf.rstrip("\n").endswith(f"requirepass {password}")
    assert (tmp_path / "mode").read_text().strip() == "600"
    assert stat.S_IMODE(os.stat(argv[0]).st_mode) == 0o600


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_redis_conf_loads_in_a_real_redis_server(tmp_path):
    """The base config and the added password are accepted by redis-server (unix socket, no TCP port)."""
    import redis

    password = "0123456789abcdef" * 2
    sock = tmp_path / "redis.sock"
    env = {**os.environ, REDIS_PASSWORD_ENV: password, "TMPDIR": str(tmp_path)}
    env["GERMINATOR_REDIS_CONF"] = str(DOCKER / "redis.conf")
    args = ["--port", "0", "--unixsocket", str(sock), "--dir", str(tmp_path)]
    proc = subprocess.Popen(
        ["sh", str(DOCKER / "redis-entrypoint.sh"), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)
        with socket.socket(socket.AF_UNIX) as raw:  # no password: refused
            raw.settimeout(5)
            raw.connect(str(sock))
            raw.sendall(b"PING\r\n")
            assert raw.recv(100).startswith(b"-NOAUTH")
        client = redis.Redis(unix_socket_path=str(sock), password=password, decode_responses=True)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        client.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- the documented commands exist in the CLI ---------------------------------------------------------------


def _documented_invocations() -> list[tuple[str, str]]:
    found = []
    readme = (CLUSTER / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", readme, re.S)
    (job,) = [d for d in _docs(KUBERAY / "rayjob.yaml") if d["kind"] == "ConfigMap"]
    texts = [("cluster/README.md", b) for b in blocks] + [("rayjob.yaml run.sh", job["data"]["run.sh"])]
    for where, text in texts:
        for m in re.finditer(r"(?<![\w/.\"'-])germinator-dist\s+([^|;)&>\n]*)", text):
            found.append((where, m.group(1)))
    return found


def test_documented_commands_parse_with_the_cli(capsys):
    from germinator_dist.cli.commands import build_parser

    parser = build_parser()
    commands = {a.dest: a for a in parser._actions if a.dest == "command"}["command"].choices
    if "submit" not in commands:
        pytest.skip("the CLI has no `submit` yet")
    invocations = _documented_invocations()
    assert len(invocations) >= 10
    for where, line in invocations:
        argv = shlex.split(line, comments=True)
        try:
            parser.parse_args(argv)
        except SystemExit:
            err = capsys.readouterr().err
            pytest.fail(f"{where}: `germinator-dist {line.strip()}` does not parse: {err}")
