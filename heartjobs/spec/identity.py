"""What identifies a run's configuration beyond its spec hash: the values behind two hashes that differ (what a
refused resume names), and the key that runs of one configuration with different seeds share."""

from __future__ import annotations

from pydantic import (
    ValidationError,
)

from heartjobs.hashing import sha256_json
from heartjobs.spec.schema import ResolvedSpec


def configuration_differences(recorded: dict, spec: ResolvedSpec) -> list[str]:
    """The values behind two spec hashes that differ ("train.lr: 0.0002 -> 0.001"), between a resolved
    spec as recorded (a dict) and `spec`; what a refused resume names."""
    try:
        old = ResolvedSpec.model_validate(recorded).hash_payload()
    except ValidationError:
        old = recorded
    old_flat, new_flat = _flatten(old), _flatten(spec.hash_payload())
    return [
        f"{key}: {old_flat.get(key, '(none)')} -> {new_flat.get(key, '(none)')}"
        for key in sorted(old_flat.keys() | new_flat.keys())
        if old_flat.get(key) != new_flat.get(key)
    ]


def configuration_key(recorded: dict, leave_out: tuple[str, ...] = ("seed",)) -> str:
    """What a run computed apart from its name and the [train] and [architecture] values in `leave_out`,
    hashed: runs of one configuration with different seeds share it (a resolved spec as recorded, a dict;
    one from older code is hashed as is)."""
    try:
        payload = ResolvedSpec.model_validate(recorded).hash_payload()
    except ValidationError:
        payload = {k: (dict(v) if isinstance(v, dict) else v) for k, v in recorded.items()}
    payload.pop("name", None)
    for section in ("train", "architecture"):
        if isinstance(payload.get(section), dict):
            payload[section] = {k: v for k, v in payload[section].items() if k not in leave_out}
    if payload.get("architecture") == {}:
        payload.pop("architecture")  # as hash_payload() leaves it out at the thesis' widths
    return sha256_json(payload)[:16]


def _flatten(table: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat
