"""Strict offline check of Kubernetes manifests: unknown fields, wrong scalar types, missing required fields.

    python infra/k8s/check.py infra/k8s/*.yaml

`kubectl apply` prunes a misspelt field of a custom resource without a word (`resorces:` simply vanishes, and the
GPU worker then runs with no GPU), and a cluster is needed to find out. This check needs none: KubeRay's kinds are
checked against infra/k8s/schema/kuberay-v1.json (field names and types taken from KubeRay's Go types), and every
Kubernetes type, whether a whole manifest (CronJob, ServiceAccount ...) or embedded in a KubeRay one (the pod
templates), against the `kubernetes` python client's models, which carry the same field list as the API server's
OpenAPI schema. Each problem comes back as one line with its JSON path::

    raycluster.yaml#0: spec.workerGroupSpecs[0].template.spec.containers[0].resorces: unknown field (did you mean
    'resources'?)

What it does not check: values against the API server's own rules (name formats, cron syntax, quantity syntax
beyond int-or-string), CEL rules of the CRDs, and anything that needs a cluster.
"""

from __future__ import annotations

import datetime
import difflib
import functools
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

SCHEMA = Path(__file__).parent / "schema" / "kuberay-v1.json"

_LIST = re.compile(r"^(?:List\[|list\[)(.+)\]$")
_DICT = re.compile(r"^(?:Dict\[str, |dict\(str, )(.+)[\])]$")
# The client types Kubernetes quantities (int-or-string on the wire, e.g. `nvidia.com/gpu: 1`) as plain str.
_QUANTITIES = {
    ("V1ResourceRequirements", "limits"), ("V1ResourceRequirements", "requests"),
    ("V1VolumeResourceRequirements", "limits"), ("V1VolumeResourceRequirements", "requests"),
    ("V1EmptyDirVolumeSource", "size_limit"), ("V1ResourceFieldSelector", "divisor"), ("V1PodSpec", "overhead"),
}  # fmt: skip


@functools.cache
def load_schema(path: Path = SCHEMA) -> dict:
    return json.loads(Path(path).read_text())


def _k8s_model(name: str):
    import kubernetes.client.models as models  # imported late: only manifests with Kubernetes types need it

    return getattr(models, name, None)


def _json_path(path: str, key: str) -> str:
    return f"{path}.{key}" if re.fullmatch(r"[A-Za-z_][\w-]*", key) else f"{path}[{key!r}]"


def validate(doc: Any) -> list[str]:
    """Every problem in one manifest (a parsed YAML document), as 'json.path: problem'; [] when it is clean."""
    if not isinstance(doc, dict):
        return [f"<root>: a manifest is a mapping, got {type(doc).__name__}"]
    api, kind = doc.get("apiVersion"), doc.get("kind")
    if not isinstance(api, str) or not isinstance(kind, str):
        return ["<root>: apiVersion and kind are required"]
    schema = load_schema()
    errors: list[str] = []
    if api.startswith("ray.io/"):
        if api != schema["apiVersion"] or kind not in schema["kinds"]:
            known = ", ".join(schema["kinds"])
            return [f"<root>: {api} {kind} is not in the KubeRay schema ({schema['apiVersion']}: {known})"]
        _check(doc, schema["kinds"][kind], "", errors)
    else:
        version = api.rsplit("/", 1)[-1]
        model = f"{version[:1].upper()}{version[1:]}{kind}"  # batch/v1 CronJob -> V1CronJob
        if _k8s_model(model) is None:
            return [f"<root>: no kubernetes client model {model} for {api} {kind}"]
        _check(doc, model, "", errors)
    if not (doc.get("metadata") or {}).get("name"):
        errors.append("metadata.name: missing (kubectl apply needs a name)")
    return errors


def validate_file(path: str | Path) -> list[str]:
    """validate() for each document of a multi-document YAML file, prefixed 'name.yaml#i: '."""
    name = Path(path).name
    try:
        docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d is not None]
    except yaml.YAMLError as e:
        return [f"{name}: not valid YAML: {e}"]
    if not docs:
        return [f"{name}: no YAML documents"]
    return [f"{name}#{i}: {e}" for i, doc in enumerate(docs) for e in validate(doc)]


def _check(value: Any, type_name: str, path: str, errors: list[str], quantity: bool = False) -> None:
    where = path or "<root>"
    if value is None:  # `key:` with nothing after it; the API server treats it as absent
        return
    if m := _LIST.match(type_name):
        if not isinstance(value, list):
            errors.append(f"{where}: expected a list, got {_describe(value)}")
            return
        for i, item in enumerate(value):
            _check(item, m.group(1), f"{path}[{i}]", errors, quantity)
        return
    if m := _DICT.match(type_name):
        if not isinstance(value, dict):
            errors.append(f"{where}: expected a mapping, got {_describe(value)}")
            return
        for key, item in value.items():
            _check(item, m.group(1), _json_path(path, str(key)), errors, quantity)
        return
    if quantity and type_name == "str":
        type_name = "quantity"
    if type_name in _SCALARS:
        ok, expected = _SCALARS[type_name]
        if not ok(value):
            errors.append(f"{where}: expected {expected}, got {_describe(value)}")
        return
    kuberay = load_schema()["types"].get(type_name)
    if kuberay is not None:
        _check_struct(value, type_name, kuberay["fields"], kuberay.get("required", ()), path, errors,
                      kuberay.get("enums", {}))  # fmt: skip
        return
    model = _k8s_model(type_name)
    if model is None:
        errors.append(f"{where}: schema error: unknown type {type_name!r} (fix infra/k8s/schema/kuberay-v1.json)")
        return
    fields = {model.attribute_map[py]: t for py, t in model.openapi_types.items()}
    required = [model.attribute_map[py] for py, f in getattr(model, "model_fields", {}).items()
                if py in model.attribute_map and f.is_required()]  # fmt: skip
    quantities = {model.attribute_map[py] for (cls, py) in _QUANTITIES if cls == type_name}
    _check_struct(value, type_name, fields, required, path, errors, {}, quantities)


def _check_struct(value, type_name, fields, required, path, errors, enums, quantities=frozenset()) -> None:
    if not isinstance(value, dict):
        errors.append(f"{path or '<root>'}: expected a {type_name} mapping, got {_describe(value)}")
        return
    for key, item in value.items():
        sub = _json_path(path, str(key)) if path else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            errors.append(f"{sub}: unknown field{hint}")
            continue
        _check(item, fields[key], sub, errors, key in quantities)
        if key in enums and isinstance(item, str) and item not in enums[key]:
            errors.append(f"{sub}: {item!r} is not one of {', '.join(enums[key])}")
    for key in required:
        if key not in value:
            errors.append(f"{_json_path(path, key) if path else key}: missing required field of {type_name}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_SCALARS = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "bytes": (lambda v: isinstance(v, str), "a (base64) string"),
    "int": (_is_int, "an integer"),
    "float": (lambda v: _is_int(v) or isinstance(v, float), "a number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "quantity": (lambda v: isinstance(v, str) or _is_int(v) or isinstance(v, float), "a quantity (string or number)"),
    "datetime": (lambda v: isinstance(v, str | datetime.date), "a timestamp"),
    "object": (lambda v: True, "anything"),
}


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, dict | list) else type(value).__name__


def main(argv: list[str] | None = None) -> int:
    paths = argv if argv is not None else sys.argv[1:]
    if not paths:
        print("usage: python infra/k8s/check.py MANIFEST.yaml ...", file=sys.stderr)
        return 2
    problems = [e for p in paths for e in validate_file(p)]
    for line in problems:
        print(line)
    print(f"{len(paths)} file(s) checked: {len(problems)} problem(s)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
