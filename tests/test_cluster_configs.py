"""cluster/configs and cluster/image: parse, validate what can be validated offline, and check that they agree.

The launcher YAML is validated against the JSON schema Ray ships (``ray/autoscaler/ray-schema.json``, the
one ``ray up`` uses).  KubeRay's CRD schemas are not available offline, so the RayCluster and RayJob
manifests are checked for the fields KubeRay requires and for consistency: one image (CPU and GPU tags
of this lmpipe version), one Ray version (the Dockerfile's, this machine's), one shared mount, token auth.
"""

from __future__ import annotations

import json
import re
import shlex
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from .conftest import REPO

CONFIGS = REPO / "cluster" / "configs"
DOCKERFILE = REPO / "cluster" / "image" / "Dockerfile"
VERSION = metadata.version("lmpipe")
IMAGE = re.compile(r"^(?P<repo>[^:]+/lmpipe):(?P<tag>[^:]+)$")


def load(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((CONFIGS / name).read_text(encoding="utf-8")) if d is not None]


def dockerfile_arg(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE.read_text(encoding="utf-8"), re.M)
    assert match, f"Dockerfile has no ARG {name}=..."
    return match.group(1)


def containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def check_ray_cluster_spec(spec: dict, *, where: str) -> dict[str, str]:
    """Required RayCluster fields and invariants; returns {group: image}."""
    assert spec["rayVersion"] == dockerfile_arg("RAY_VERSION"), where
    assert spec.get("authOptions", {}).get("mode") == "token", f"{where}: token authentication"
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    (head_container,) = containers(head["template"])
    ports = {p["containerPort"] for p in head_container["ports"]}
    assert {6379, 8265} <= ports, f"{where}: the head exposes the GCS and the Job API"
    images = {"head": head_container["image"]}
    mounts = {m["mountPath"] for m in head_container["volumeMounts"]}
    assert spec["workerGroupSpecs"], f"{where}: at least one worker group"
    for group in spec["workerGroupSpecs"]:
        name = group["groupName"]
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], f"{where}: {name} replicas"
        assert isinstance(group["rayStartParams"], dict)
        (container,) = containers(group["template"])
        images[name] = container["image"]
        res = container["resources"]
        assert res["requests"] == res["limits"], f"{where}: {name}: Ray sizes itself from limits; keep requests equal"
        assert {m["mountPath"] for m in container["volumeMounts"]} == mounts, f"{where}: {name}: same shared mount"
    for pod in [head, *spec["workerGroupSpecs"]]:
        names = {v["name"] for v in pod["template"]["spec"]["volumes"]}
        used = {m["name"] for c in containers(pod["template"]) for m in c["volumeMounts"]}
        assert used <= names, f"{where}: every mounted volume is declared"
    return images


def check_images(images: dict[str, str], *, where: str) -> None:
    for group, image in images.items():
        match = IMAGE.match(image)
        assert match, f"{where}: {group}: image {image!r} is not REGISTRY/lmpipe:TAG"
        variant = "gpu" if "gpu" in group else "cpu"
        assert match["tag"] == f"{VERSION}-{variant}", f"{where}: {group}: tag {match['tag']!r}, want {VERSION}-{variant}"
    assert len({IMAGE.match(i)["repo"] for i in images.values()}) == 1, f"{where}: one image repository"


def test_raycluster_manifest():
    docs = load("raycluster.yaml")
    (cluster,) = [d for d in docs if d["kind"] == "RayCluster"]
    assert cluster["apiVersion"] == "ray.io/v1"
    images = check_ray_cluster_spec(cluster["spec"], where="raycluster.yaml")
    check_images(images, where="raycluster.yaml")
    groups = {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    (gpu,) = containers(groups["gpu"]["template"])
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1"
    (claim,) = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    assert "ReadWriteMany" in claim["spec"]["accessModes"], "run directories are shared by every pod"
    volumes = cluster["spec"]["headGroupSpec"]["template"]["spec"]["volumes"]
    assert volumes[0]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]


def test_rayjob_manifest_runs_lmpipe_on_the_same_image():
    (job,) = load("rayjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    images = check_ray_cluster_spec(spec["rayClusterSpec"], where="rayjob.yaml")
    check_images(images, where="rayjob.yaml")
    (cluster,) = [d for d in load("raycluster.yaml") if d["kind"] == "RayCluster"]
    assert set(images.values()) <= set(check_ray_cluster_spec(cluster["spec"], where="raycluster.yaml").values())
    argv = shlex.split(spec["entrypoint"])
    assert argv[:4] == ["python", "-m", "lmpipe.pipelines.cli", "run"]  # the cluster's interpreter, no PATH lookup
    argv = argv[2:]  # argv[2]: the spec, as for `lmpipe run`
    workdir = re.search(r"^WORKDIR (\S+)$", DOCKERFILE.read_text(encoding="utf-8"), re.M).group(1)
    spec_path = Path(argv[2])
    assert spec_path.is_relative_to(workdir) and (REPO / spec_path.relative_to(workdir)).is_file(), argv[2]
    run_dir = argv[argv.index("--run-dir") + 1]
    (head,) = containers(spec["rayClusterSpec"]["headGroupSpec"]["template"])
    assert any(run_dir.startswith(m["mountPath"] + "/") for m in head["volumeMounts"]), "runs go to the shared mount"
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert isinstance(runtime_env, dict) and set(runtime_env) <= {"env_vars", "pip", "working_dir", "py_modules"}
    assert spec["shutdownAfterJobFinishes"] is True and spec["submissionMode"] in ("K8sJobMode", "HTTPMode")


def launcher_schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text(encoding="utf-8"))


def test_launcher_yaml_validates_against_rays_schema():
    import jsonschema

    (config,) = load("aws-cluster.yaml")
    jsonschema.validate(config, launcher_schema())
    bad = {**config, "available_node_type": config["available_node_types"]}  # a typo must not pass
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, launcher_schema())


def test_launcher_yaml_has_cpu_and_gpu_groups_on_the_lmpipe_image():
    (config,) = load("aws-cluster.yaml")
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    workers = {k: v for k, v in types.items() if k != config["head_node_type"]}
    assert sum(t["max_workers"] for t in workers.values()) <= config["max_workers"]
    gpu = [k for k, t in workers.items() if t["resources"].get("GPU", 0) >= 1]
    cpu = [k for k, t in workers.items() if not t["resources"].get("GPU")]
    assert gpu and cpu, "a CPU and a GPU worker group"
    images = {"head": config["docker"]["image"]}
    for name in workers:
        images[name] = types[name].get("docker", {}).get("worker_image", config["docker"]["image"])
    check_images(images, where="aws-cluster.yaml")
    head_cmd = " ".join(config["head_start_ray_commands"])
    assert "ray start --head" in head_cmd and "--dashboard-port=8265" in head_cmd and "RAY_AUTH_MODE=token" in head_cmd
    assert "ray start --address=$RAY_HEAD_IP:6379" in " ".join(config["worker_start_ray_commands"])
    mount = "/mnt/lmpipe"
    assert f"-v {mount}:{mount}" in config["docker"]["run_options"], "the shared run directory inside containers"


def test_dockerfile_pins_what_the_repo_pins():
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert dockerfile_arg("RAY_VERSION") == metadata.version("ray"), "the image's Ray is the Ray lmpipe is tested with"
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert dockerfile_arg("TORCH_VERSION") == re.search(r"^TORCH_VERSION\s*\?=\s*(\S+)", makefile, re.M).group(1)
    build = (REPO / ".ci" / "build_kenlm.sh").read_text(encoding="utf-8")
    assert dockerfile_arg("KENLM_VERSION") == re.search(r"^KENLM_VERSION=(\S+)", build, re.M).group(1)
    import tomllib

    mapping = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["package-dir"]
    folders = {Path(folder).parts[0] for folder in mapping.values()}  # pipelines/api travels inside pipelines/
    assert folders == {"pipelines", "cluster", "lm", "embeddings"}
    for folder in folders:
        assert re.search(rf"^COPY .* {folder} \./{folder}$", text, re.M), f"the image installs {folder}"
    assert re.search(r"^COPY .* pyproject\.toml README\.md LICENSE \./$", text, re.M), "what pip install . reads"
    assert "import lmpipe.pipelines.cli" in text and "python -m lmpipe.pipelines.cli --version" in text
    assert not re.search(r"import (pipelines|cluster|lm|embeddings)\b", text), "no generic top-level package"
    assert re.search(r"^FROM rayproject/ray:\$\{RAY_VERSION\}-py311-\$\{VARIANT\}$", text, re.M)
    assert "build_kenlm.sh" in text and "lmpipe --version" in text
