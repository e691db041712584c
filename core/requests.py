"""The task request: the one untrusted input (HTTP body or a ``*.json`` dropped into ``incoming``).

Validation happens here, once, at the edge; everything downstream receives a normalized ``TaskRequest``. Every error
names the field and says how to fix it, because the person reading it is usually an ecologist with a JSON file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from core.errors import RequestInvalid
from core.ids import task_instance_id

_CONTAINER_RE = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")
ALLOWED_FIELDS = ("container", "prefix", "first_n", "sample_n", "seed", "model", "request_name", "caller",
                  "images_per_shard")
# Fields that define *what* is computed; request_name and caller are labels and do not change the task id.
IDENTITY_FIELDS = ("container", "prefix", "first_n", "sample_n", "seed", "model", "images_per_shard")
MAX_IMAGES_PER_SHARD = 100_000


@dataclass(frozen=True, slots=True)
class TaskRequest:
    container: str
    prefix: str = ""
    first_n: int | None = None
    sample_n: int | None = None
    seed: int | None = None
    model: str = ""
    request_name: str = ""
    caller: str = ""
    images_per_shard: int = 1000

    @property
    def task_id(self) -> str:
        return task_instance_id(self.identity())

    def identity(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in IDENTITY_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ALLOWED_FIELDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TaskRequest":
        return cls(**{k: data[k] for k in ALLOWED_FIELDS if k in data})


def _opt_int(body: Mapping[str, Any], name: str, minimum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestInvalid(f"'{name}' must be an integer, got {value!r}", f"e.g. \"{name}\": 100")
    if value < minimum:
        raise RequestInvalid(f"'{name}' must be at least {minimum}, got {value}", f"use a value >= {minimum}")
    return value


def _opt_str(body: Mapping[str, Any], name: str, max_len: int = 1024) -> str:
    value = body.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RequestInvalid(f"'{name}' must be a string, got {type(value).__name__}", f'e.g. "{name}": "..."')
    if len(value) > max_len:
        raise RequestInvalid(f"'{name}' is longer than {max_len} characters", "shorten it")
    return value


def parse_task_request(body: Any, default_model: str = "", default_images_per_shard: int = 1000) -> TaskRequest:
    """Validate and normalize a request body; raise ``RequestInvalid`` naming the bad field."""
    if not isinstance(body, Mapping):
        raise RequestInvalid(
            "the task request must be a JSON object",
            'send e.g. {"container": "my-camera-traps", "prefix": "2024/site-a/"}',
        )
    unknown = sorted(set(body) - set(ALLOWED_FIELDS))
    if unknown:
        raise RequestInvalid(f"unknown field(s): {', '.join(unknown)}", f"allowed fields: {', '.join(ALLOWED_FIELDS)}")
    container = body.get("container")
    if not isinstance(container, str) or not container:
        raise RequestInvalid("'container' is required", 'name the blob container holding the images: {"container": "..."}')
    if not _CONTAINER_RE.match(container):
        raise RequestInvalid(
            f"'container' {container!r} is not a valid blob container name",
            "use 3-63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit",
        )
    prefix = _opt_str(body, "prefix").lstrip("/")
    first_n = _opt_int(body, "first_n", 1)
    sample_n = _opt_int(body, "sample_n", 1)
    seed = _opt_int(body, "seed", 0)
    if first_n is not None and sample_n is not None:
        raise RequestInvalid("'first_n' and 'sample_n' cannot both be set", "choose the first N images or a random sample")
    if seed is not None and sample_n is None:
        raise RequestInvalid("'seed' only applies with 'sample_n'", "add 'sample_n' or drop 'seed'")
    if sample_n is not None and seed is None:
        seed = 0
    images_per_shard = _opt_int(body, "images_per_shard", 1)
    if images_per_shard is None:
        images_per_shard = default_images_per_shard
    if images_per_shard > MAX_IMAGES_PER_SHARD:
        raise RequestInvalid(f"'images_per_shard' must be at most {MAX_IMAGES_PER_SHARD}", "use smaller shards")
    model = _opt_str(body, "model").strip() or default_model
    return TaskRequest(
        container=container,
        prefix=prefix,
        first_n=first_n,
        sample_n=sample_n,
        seed=seed,
        model=model,
        request_name=_opt_str(body, "request_name", 200),
        caller=_opt_str(body, "caller", 200),
        images_per_shard=images_per_shard,
    )
