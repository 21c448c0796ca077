"""YAML manifests (kubectl-like `kind`/`metadata`/`spec`) to and from Resources.

Fields may be written camelCase (protobuf's JSON names) or snake_case. Before
handing a document to protobuf's json_format we walk it against the message
descriptor ourselves, so an error names the exact field path
(`spec.load_balancer.algorithm`) instead of json_format's prose.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

import yaml
from google.protobuf import json_format  # type: ignore[import-untyped]
from google.protobuf.descriptor import (  # type: ignore[import-untyped]
    Descriptor,
    FieldDescriptor,
)

from skein.config.kinds import KINDS, kind_message_class, make_resource, parse_kind, resource_kind
from skein.config.kinds import resource_message as _inner
from skein.config.validate import validate_resource
from skein.errors import ConfigError
from skein.v1 import resources_pb2

__all__ = ["load_manifests", "parse_manifest", "resource_to_manifest"]

_DURATION = re.compile(r"-?\d+(\.\d{1,9})?s")
_TOP_LEVEL = ("apiVersion", "kind", "metadata", "spec")
_INTS = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_SFIXED64,
}
_UNSIGNED = {
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_FIXED64,
}


def _type_name(value: object) -> str:
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)


def _check_scalar(field: FieldDescriptor, value: object, path: str) -> None:
    if field.type == FieldDescriptor.TYPE_ENUM:
        names = [v.name for v in field.enum_type.values]
        if isinstance(value, str) and value in names:
            return
        known = ", ".join(n for n in names if not n.endswith("_UNSPECIFIED"))
        raise ConfigError(path, f"unknown value {value!r}; expected one of {known}")
    if field.type in _INTS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"expected an integer, got {_type_name(value)} {value!r}")
        if field.type in _UNSIGNED and value < 0:
            raise ConfigError(path, f"must not be negative, got {value}")
        return
    if field.type == FieldDescriptor.TYPE_BOOL:
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected true or false, got {value!r}")
        return
    if field.type == FieldDescriptor.TYPE_STRING:
        if not isinstance(value, str):
            raise ConfigError(path, f"expected a string, got {_type_name(value)} {value!r}")
        return
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(path, f"expected a number, got {_type_name(value)} {value!r}")
        if not math.isfinite(value):
            raise ConfigError(path, f"expected a finite number, got {value!r}")


def _walk(desc: Descriptor, data: object, path: str) -> dict[str, Any]:
    """Check `data` against `desc`; return it with snake_case keys for json_format."""
    if desc.full_name == "google.protobuf.Duration":
        raise AssertionError("durations are checked by the caller")
    if not isinstance(data, dict):
        raise ConfigError(path, f"expected a mapping, got {_type_name(data)}")
    by_name = {}
    for f in desc.fields:
        by_name[f.name] = f
        by_name[f.json_name] = f
    out: dict[str, Any] = {}
    for key, value in data.items():
        field = by_name.get(key) if isinstance(key, str) else None
        sub = f"{path}.{key}" if path else str(key)
        if field is None:
            known = ", ".join(f.json_name for f in desc.fields)
            raise ConfigError(sub, f"unknown field; expected one of {known}")
        sub = f"{path}.{field.name}" if path else field.name
        if field.name in out:
            raise ConfigError(sub, "given twice (camelCase and snake_case)")
        if value is None:
            continue
        out[field.name] = _field_value(field, value, sub)
    return out


def _field_value(field: FieldDescriptor, value: object, path: str) -> object:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping, got {_type_name(value)}")
        value_field = field.message_type.fields_by_name["value"]
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{path}[{k!r}]", "keys must be strings")
            _check_scalar(value_field, v, f"{path}[{k!r}]")
        return value
    if field.is_repeated:
        if not isinstance(value, list):
            raise ConfigError(path, f"expected a list, got {_type_name(value)}")
        return [_single(field, v, f"{path}[{i}]") for i, v in enumerate(value)]
    return _single(field, value, path)


def _single(field: FieldDescriptor, value: object, path: str) -> object:
    if field.message_type is None:
        _check_scalar(field, value, path)
        return value
    if field.message_type.full_name == "google.protobuf.Duration":
        if not isinstance(value, str) or not _DURATION.fullmatch(value):
            raise ConfigError(path, f"expected a duration like '1.5s' or '250ms', got {value!r}")
        return value
    return _walk(field.message_type, value, path)


_UNITS = {"ms": 0.001, "us": 0.000001, "m": 60.0, "h": 3600.0}


def _normalise_durations(data: object) -> object:
    """Accept `250ms`/`2m` in manifests: json_format only reads seconds (`0.25s`)."""
    if isinstance(data, dict):
        return {k: _normalise_durations(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_normalise_durations(v) for v in data]
    if isinstance(data, str):
        match = re.fullmatch(r"(-?\d+(?:\.\d+)?)(ms|us|m|h)", data)
        if match:
            seconds = float(match.group(1)) * _UNITS[match.group(2)]
            return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"
    return data


def parse_manifest(doc: object) -> resources_pb2.Resource:
    """One manifest document (already YAML/JSON-decoded) → validated Resource."""
    if not isinstance(doc, dict):
        raise ConfigError(
            "", f"expected a mapping with kind, metadata and spec, got {_type_name(doc)}"
        )
    for key in doc:
        if key not in _TOP_LEVEL:
            raise ConfigError(str(key), "unknown field; expected apiVersion, kind, metadata, spec")
    kind_text = doc.get("kind")
    if not isinstance(kind_text, str) or not kind_text:
        raise ConfigError(
            "kind", "required: one of Service, TrafficPolicy, Endpoint, AuthorizationPolicy"
        )
    kind = parse_kind(kind_text)
    if kind not in KINDS:
        raise ConfigError(
            "kind", f"{kind} is not applied from a manifest; create it with its own command"
        )
    cls = kind_message_class(kind)
    body = {k: _normalise_durations(doc[k]) for k in ("metadata", "spec") if k in doc}
    checked = _walk(cls.DESCRIPTOR, body, "")
    message = cls()
    try:
        json_format.ParseDict(checked, message, ignore_unknown_fields=False)
    except json_format.ParseError as err:  # the walk should have caught it; keep the words
        raise ConfigError("", f"does not parse: {err}") from None
    res = make_resource(kind, message)
    validate_resource(res)
    return res


def _documents(path: str) -> list[tuple[str, int, object]]:
    try:
        with open(path, encoding="utf-8") as fh:
            docs = list(yaml.safe_load_all(fh))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError("", f"not valid YAML{line}: {problem}", where=path) from None
    except OSError as err:
        raise ConfigError("", f"cannot read: {err.strerror}", where=path) from None
    except UnicodeDecodeError:
        raise ConfigError("", "not UTF-8 text", where=path) from None
    return [(path, i, doc) for i, doc in enumerate(docs)]


def load_manifests(path: str) -> list[Any]:
    """Resources from a YAML file or every *.yaml/*.yml in a directory (sorted).

    Raises ConfigError with where=`file.yaml#<index>` (0-based document index
    within the file) and the field path. Empty documents are skipped.
    """
    if os.path.isdir(path):
        files = sorted(
            os.path.join(path, name)
            for name in os.listdir(path)
            if name.endswith((".yaml", ".yml")) and os.path.isfile(os.path.join(path, name))
        )
        if not files:
            raise ConfigError("", "directory has no *.yaml or *.yml files", where=path)
    elif os.path.exists(path):
        files = [path]
    else:
        raise ConfigError("", "no such file or directory", where=path)
    resources: list[Any] = []
    seen: dict[tuple[str, str], str] = {}
    for file in files:
        for fname, index, doc in _documents(file):
            if doc is None:
                continue
            where = f"{fname}#{index}"
            try:
                res = parse_manifest(doc)
            except ConfigError as err:
                raise ConfigError(err.field, err.reason, where=where) from None
            key = (resource_kind(res), _inner(res).metadata.name)  # type: ignore[attr-defined]
            if key in seen:
                raise ConfigError(
                    "metadata.name",
                    f"{key[0]}/{key[1]} is also defined at {seen[key]}",
                    where=where,
                )
            seen[key] = where
            resources.append(res)
    return resources


def resource_to_manifest(res: resources_pb2.Resource) -> dict[str, Any]:
    """Resource → `{"kind", "metadata", "spec"}` (camelCase, enum names) for `get -o`."""
    kind = resource_kind(res)
    message = _inner(res)
    body = json_format.MessageToDict(message)
    return {"kind": kind, "metadata": body.get("metadata", {}), "spec": body.get("spec", {})}
