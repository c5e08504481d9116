"""The registered model kinds, looked up by name; the choice of `model.kind` is checked here."""

from __future__ import annotations

from importlib import import_module
from typing import Any, Mapping

from taxipipe.errors import ConfigError
from taxipipe.models import KIND_NAMES
from taxipipe.models.base import KindParams, ModelKind

KINDS: dict[str, ModelKind] = {name: import_module(f"taxipipe.models.{name}").KIND for name in KIND_NAMES}
DEFAULT_KIND = KIND_NAMES[0]


def get_kind(name: str) -> ModelKind:
    """The registered kind called `name`."""
    if name not in KINDS:
        raise ConfigError(f"model.kind '{name}' is not a model kind; choose one of {', '.join(KINDS)}")
    return KINDS[name]


def kind_params(name: str, preset: str | None, given: Mapping[str, Any]) -> KindParams:
    """The validated `model.params` of kind `name`: the preset's values, then the given ones."""
    kind = get_kind(name)
    if preset is not None and preset not in kind.presets:
        owners = [other.name for other in KINDS.values() if preset in other.presets]
        raise ConfigError(
            f"model.preset '{preset}' is not a preset of model kind '{name}'"
            + (f" (it belongs to {', '.join(owners)})" if owners else "")
            + "; unset model.preset or choose another kind"
        )
    values = {**(kind.presets[preset] if preset else {}), **given}
    unknown = sorted(set(values) - set(kind.params.model_fields))
    if unknown:
        raise ConfigError(
            f"model.params.{unknown[0]} is not a parameter of model kind '{name}' "
            f"(it takes {', '.join(kind.params.model_fields) or 'none'})"
        )
    from pydantic import ValidationError

    try:
        return kind.params.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        raise ConfigError(f"model.params.{key}: {error['msg']} (got {error.get('input')!r})") from None


def check_feature_mode(name: str, mode: str) -> None:
    """Fail with one sentence when kind `name` cannot learn from feature mode `mode`."""
    kind = get_kind(name)
    if kind.feature_modes is not None and mode not in kind.feature_modes:
        raise ConfigError(
            f"model.kind '{name}' works on the {' or '.join(kind.feature_modes)} features, not "
            f"model.features '{mode}'; set model.features to {kind.feature_modes[0]} "
            f"(--features {kind.feature_modes[0]})"
        )
