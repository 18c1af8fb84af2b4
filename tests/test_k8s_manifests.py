"""infra/k8s/: every manifest is schema-clean, safe (no literal credentials or buckets) and runs valid anonvid commands.

No cluster is needed: field names and types are checked offline by infra/k8s/check.py (KubeRay's CRD fields from
infra/k8s/schema/kuberay-v1.json, Kubernetes types from the kubernetes client's models), and each entrypoint is
parsed by the real CLI with its config loaded and validated, the way the image would run it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "infra" / "k8s"
MANIFESTS = sorted(K8S.glob("*.yaml"))
EXAMPLES = sorted((K8S / "examples").glob("*.yaml"))
IMAGE_ROOT = "/home/ray/anonvid/"  # WORKDIR of infra/docker/Dockerfile: the repo's files live under it in the image
# The keys of the ConfigMap anonvid-paths: the only ANONVID_* variables a pod gets, so the only ones a config may use.
PATH_KEYS = ("ANONVID_INPUT", "ANONVID_OUTPUT", "ANONVID_MODELS", "ANONVID_TRAIN_MANIFEST", "ANONVID_TRAIN_STORAGE")
IMAGE = re.compile(r"^(?:[\w.-]+(?::\d+)?/)?(?:[\w.-]+/)*anonvid:(?:gpu|cpu)$")


def _load_check():
    spec = importlib.util.spec_from_file_location("anonvid_k8s_check", K8S / "check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


check = _load_check()


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def all_docs() -> list[tuple[str, dict]]:
    return [(p.name, d) for p in MANIFESTS for d in docs(p)]


def cluster_specs() -> list[tuple[str, dict]]:
    """Every RayClusterSpec: a RayCluster's spec, a RayJob's rayClusterSpec, a RayCronJob's jobTemplate's."""
    found = []
    for name, d in all_docs():
        spec = d.get("spec", {})
        if d["kind"] == "RayCluster":
            found.append((name, spec))
        elif d["kind"] == "RayJob":
            found.append((name, spec["rayClusterSpec"]))
        elif d["kind"] == "RayCronJob":
            found.append((name, spec["jobTemplate"]["rayClusterSpec"]))
    return found


def containers(node) -> list[dict]:
    """Every container of every pod template anywhere below `node`."""
    if isinstance(node, list):
        return [c for item in node for c in containers(item)]
    if not isinstance(node, dict):
        return []
    own = [c for key in ("containers", "initContainers") for c in node.get(key) or []]
    return own + [c for value in node.values() for c in containers(value)]


def anonvid_commands() -> list[tuple[str, list[str]]]:
    """(where, argv) for every anonvid command a manifest runs, plus the variants its comments offer."""
    found = []
    for name, d in all_docs():
        if d["kind"] == "RayJob":
            found.append((name, shlex.split(d["spec"]["entrypoint"])))
        elif d["kind"] == "RayCronJob":
            found.append((name, shlex.split(d["spec"]["jobTemplate"]["entrypoint"])))
        for c in containers(d) if d["kind"] in ("CronJob", "Job", "Pod") else []:
            argv = [*(c.get("command") or []), *(c.get("args") or [])]
            if argv[:1] == ["sh"] or argv[:1] == ["/bin/sh"]:
                argv = shlex.split(argv[-1])
            found.append((name, argv))
    for path in MANIFESTS:
        for m in re.finditer(r"^#\s+entrypoint:\s+(anonvid .+)$", path.read_text(), re.M):
            found.append((f"{path.name} (comment)", shlex.split(m.group(1))))
    return found


def as_run_here(argv: list[str], env: dict[str, str]) -> list[str]:
    """The argv with image paths mapped onto this checkout and Kubernetes' $(VAR) expanded from `env`."""
    out = []
    for word in argv:
        word = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], word)
        out.append(str(ROOT / word[len(IMAGE_ROOT):]) if word.startswith(IMAGE_ROOT) else word)
    return out


# --- schema ---------------------------------------------------------------------------------------------------


def test_manifests_exist():
    names = {p.name for p in MANIFESTS}
    assert {"namespace-and-access.yaml", "raycluster.yaml", "rayjob-anonymize.yaml", "rayjob-train.yaml",
            "raycronjob-anonymize.yaml", "cronjob-submit.yaml"} <= names  # fmt: skip


@pytest.mark.parametrize("path", MANIFESTS + EXAMPLES, ids=lambda p: p.name)
def test_manifest_matches_the_schema(path):
    assert check.validate_file(path) == []


def test_checker_command_line(capsys):
    assert check.main([str(p) for p in MANIFESTS]) == 0
    assert f"{len(MANIFESTS)} file(s) checked: 0 problem(s)" in capsys.readouterr().err


def test_schema_covers_the_kuberay_kinds():
    schema = check.load_schema()
    assert schema["apiVersion"] == "ray.io/v1"
    assert set(schema["kinds"]) == {"RayCluster", "RayJob", "RayCronJob"}
    assert schema["types"]["RayCronJobSpec"]["fields"] == {"jobTemplate": "RayJobSpec", "schedule": "str",
                                                           "suspend": "bool"}  # fmt: skip
    for name, t in schema["types"].items():  # every type a field names resolves: KubeRay's own, or the client's
        for field, type_name in t["fields"].items():
            inner = re.sub(r"^(List\[|Dict\[str, )|\]$", "", type_name)
            assert inner in check._SCALARS or inner in schema["types"] or check._k8s_model(inner), (name, field)


def test_validator_reports_unknown_kuberay_field():
    d = docs(K8S / "raycluster.yaml")[0]
    d["spec"]["workerGroupSpecs"][0]["maxReplica"] = 8
    assert check.validate(d) == ["spec.workerGroupSpecs[0].maxReplica: unknown field (did you mean 'maxReplicas'?)"]


def test_validator_reports_unknown_field_inside_pod_template():
    d = docs(K8S / "rayjob-anonymize.yaml")[0]
    container = d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    container["resorces"] = container.pop("resources")
    assert check.validate(d) == ["spec.rayClusterSpec.workerGroupSpecs[0].template.spec.containers[0].resorces: "
                                 "unknown field (did you mean 'resources'?)"]  # fmt: skip


def test_validator_reports_a_wrapped_raycronjob_template():
    """KubeRay's jobTemplate is a RayJob spec itself; the `spec:` wrapper of a Kubernetes CronJob is a common slip."""
    d = docs(K8S / "raycronjob-anonymize.yaml")[0]
    d["spec"]["jobTemplate"] = {"spec": d["spec"]["jobTemplate"]}
    assert check.validate(d) == ["spec.jobTemplate.spec: unknown field"]


def test_validator_reports_wrong_types():
    d = docs(K8S / "raycluster.yaml")[0]
    d["spec"]["workerGroupSpecs"][0]["maxReplicas"] = "eight"
    d["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0  # KubeRay wants strings there
    assert check.validate(d) == [
        "spec.headGroupSpec.rayStartParams.num-cpus: expected a string, got int 0",
        "spec.workerGroupSpecs[0].maxReplicas: expected an integer, got str 'eight'",
    ]


def test_validator_reports_kubernetes_kind_problems():
    d = docs(K8S / "cronjob-submit.yaml")[0]
    d["spec"]["concurrency"] = "Forbid"
    d["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0].pop("name")
    assert sorted(check.validate(d)) == [
        "spec.concurrency: unknown field (did you mean 'concurrencyPolicy'?)",
        "spec.jobTemplate.spec.template.spec.containers[0].name: missing required field of V1Container",
    ]


def test_validator_accepts_int_quantities_and_rejects_unknown_kinds():
    d = docs(K8S / "raycluster.yaml")[0]
    d["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = 1
    assert check.validate(d) == []
    assert check.validate({"apiVersion": "ray.io/v1", "kind": "RayServe", "metadata": {"name": "x"}})[0].startswith(
        "<root>: ray.io/v1 RayServe is not in the KubeRay schema")


# --- conventions ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_header_names_the_command_that_applies_it(path):
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    assert header, f"{path.name}: starts without a header comment"
    assert any(f"kubectl apply -f infra/k8s/{path.name}" in line or "kubectl create " in line for line in header)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_no_literal_credentials_or_buckets(path):
    text = path.read_text()
    assert "s3://" not in text, "bucket paths belong in the ConfigMap anonvid-paths, not in a manifest"
    assert not re.search(r"AWS_SECRET_ACCESS_KEY\s*[:=]\s*\S", text)
    for d in docs(path):
        assert d["kind"] not in ("Secret", "ConfigMap"), "Secrets and ConfigMaps are created by the operator"
        for c in containers(d):
            for env in c.get("env") or []:
                if env["name"].startswith(("AWS_", "ANONVID_")):
                    assert "value" not in env, f"{path.name}: {env['name']} has a literal value"
            for source in c.get("envFrom") or []:
                ref = source.get("secretRef") or source.get("configMapRef")
                assert ref["name"] in ("anonvid-s3", "anonvid-paths"), ref


def test_example_configmap_has_exactly_the_path_keys():
    (cm,) = docs(K8S / "examples" / "anonvid-paths.example.yaml")
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "anonvid-paths"
    assert sorted(k for k in cm["data"] if k.startswith("ANONVID_")) == sorted(PATH_KEYS)


@pytest.mark.parametrize("name,spec", [pytest.param(n, s, id=n) for n, s in cluster_specs()])
def test_ray_cluster_shape(name, spec):
    import ray

    assert spec["rayVersion"] == ray.__version__, f"{name}: rayVersion must match the image's Ray"
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0", "no work may land on the head"
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert head["template"]["spec"]["serviceAccountName"] == "anonvid"
    (gpu,) = [g for g in spec["workerGroupSpecs"] if g["groupName"] == "gpu"]
    assert gpu["minReplicas"] == 0 and gpu["maxReplicas"] >= 1
    pod = gpu["template"]["spec"]
    assert pod["serviceAccountName"] == "anonvid"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    for c in pod["containers"]:
        requests, limits = c["resources"]["requests"], c["resources"]["limits"]
        assert str(requests["nvidia.com/gpu"]) == str(limits["nvidia.com/gpu"]) == "1"
    for c in containers(spec):
        refs = [s.get("configMapRef", s.get("secretRef")) for s in c["envFrom"]]
        assert {"name": "anonvid-paths"} in refs and {"name": "anonvid-s3", "optional": True} in refs


def test_ray_manifests_share_one_pod_shape():
    """Head and worker containers are the same everywhere: a change to one manifest's sizing reaches them all."""
    shapes = {}
    for name, spec in cluster_specs():
        head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
        worker = spec["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
        shapes[name] = [{k: c[k] for k in ("image", "resources", "envFrom", "volumeMounts")} for c in (head, worker)]
    first = next(iter(shapes.values()))
    assert all(s == first for s in shapes.values()), shapes


def test_raycronjob_runs_the_one_off_rayjob_spec():
    (one_off,) = docs(K8S / "rayjob-anonymize.yaml")
    (cron,) = docs(K8S / "raycronjob-anonymize.yaml")
    assert cron["spec"]["jobTemplate"] == one_off["spec"]
    assert len(cron["spec"]["schedule"].split()) == 5


@pytest.mark.parametrize("name,doc", [pytest.param(n, d, id=f"{n}:{d['kind']}") for n, d in all_docs()])
def test_images_are_anonvid(name, doc):
    for c in containers(doc):
        assert IMAGE.match(c["image"]), f"{name}: {c['name']} runs {c['image']!r}, not anonvid:gpu / anonvid:cpu"


def test_cronjob_submits_to_the_long_lived_cluster():
    (cron,) = docs(K8S / "cronjob-submit.yaml")
    (cluster,) = docs(K8S / "raycluster.yaml")
    meta = cluster["metadata"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["startingDeadlineSeconds"] > 0 and cron["spec"]["jobTemplate"]["spec"]["backoffLimit"] <= 2
    (c,) = containers(cron)
    assert c["image"].endswith("anonvid:cpu")
    argv = c["command"]
    head_svc = f"{meta['name']}-head-svc.{meta['namespace']}.svc.cluster.local"  # KubeRay's name for the head service
    assert argv[argv.index("--address") + 1] == f"http://{head_svc}:8265"
    env = {e["name"]: e for e in c["env"]}
    for var in re.findall(r"\$\((\w+)\)", " ".join(argv)):  # Kubernetes expands only variables the container defines
        assert var in env, var
    assert env["JOB_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['batch.kubernetes.io/job-name']"
    assert {"configMapRef": {"name": "anonvid-paths"}} in c["envFrom"]  # submit resolves ${ANONVID_...} here


# --- entrypoints ------------------------------------------------------------------------------------------------


def test_every_scheduled_and_one_off_job_is_covered():
    runs = {(where, " ".join(argv[:3])) for where, argv in anonvid_commands()}
    assert ("rayjob-anonymize.yaml", "anonvid anonymize --config") in runs
    assert ("raycronjob-anonymize.yaml", "anonvid anonymize --config") in runs
    assert ("rayjob-train.yaml", "anonvid train pruner") in runs
    assert ("cronjob-submit.yaml", "anonvid submit anonymize") in runs
    assert {" ".join(argv[:3]) for _, argv in anonvid_commands()} >= {"anonvid train encoder", "anonvid train aam"}


@pytest.mark.parametrize("where,argv", [pytest.param(w, a, id=f"{w}:{' '.join(a[1:3])}")
                                        for w, a in anonvid_commands()])  # fmt: skip
def test_entrypoint_is_a_valid_anonvid_command(where, argv, monkeypatch):
    from jobs.jobconfigs import command_errors

    for var in [v for v in os.environ if v.startswith("ANONVID_")]:
        monkeypatch.delenv(var)  # only what the ConfigMap provides may be relied on
    for key in PATH_KEYS:
        monkeypatch.setenv(key, f"s3://bucket/{key.lower()}/")
    assert argv[0] == "anonvid", f"{where}: runs {argv[0]!r}"
    assert argv[argv.index("--config") + 1].startswith(IMAGE_ROOT), f"{where}: the config must come from the image"
    assert command_errors(as_run_here(argv, {"JOB_NAME": "anonvid-submit-anonymize-29000000"})) == []


@pytest.mark.parametrize("argv,problem", [
    (["anonvid", "anonymize", "--config", "missing.yaml"], "missing.yaml: file not found"),
    (["anonvid", "anonymse", "--config", f"{IMAGE_ROOT}jobs/configs/anonymize_gpu_vitb.yaml"], "invalid choice"),
    (["anonvid", "train", "pruner", "--confg", f"{IMAGE_ROOT}jobs/configs/train_pruner_gpu_vitb.yaml"], "--confg"),
])  # fmt: skip
def test_broken_entrypoints_are_reported(argv, problem):
    from jobs.jobconfigs import command_errors

    errors = command_errors(as_run_here(argv, {}))
    assert errors and problem in errors[0], errors


def test_a_variable_the_configmap_lacks_is_reported(monkeypatch):
    from jobs.jobconfigs import command_errors

    for key in PATH_KEYS:
        monkeypatch.setenv(key, f"s3://bucket/{key.lower()}/")
    monkeypatch.delenv("ANONVID_MODELS")
    (one_off,) = docs(K8S / "rayjob-anonymize.yaml")
    errors = command_errors(as_run_here(shlex.split(one_off["spec"]["entrypoint"]), {}))
    assert errors and all("ANONVID_MODELS is not set" in e for e in errors), errors
