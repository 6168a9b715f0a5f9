"""Model registry: ``create_model(name, num_classes)`` and ``list_models()``.

Architectures register themselves with ``@register_model``; every built-in model is a
:class:`rlmix.models.base.Classifier` taking [0, 1] pixel images. ``create_model`` also builds
any ``package.module:function`` constructor and ``timm/<name>`` (the ``rlmix[timm]`` extra),
wrapped in an :class:`rlmix.models.external.ExternalClassifier` that takes [0, 1] pixels too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rlmix.models.base import Classifier
from rlmix.models.external import ExternalClassifier, build_external, check_name, is_external
from rlmix.registry import Registry

MODELS: Registry[Callable[..., Classifier]] = Registry(
    "model", hint=" or package.module:function or timm/<name>"
)


def register_model(fn: Callable[..., Classifier]) -> Callable[..., Classifier]:
    """Register a model constructor under its function name."""
    return MODELS.add(fn.__name__, fn)


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return MODELS.names()


def check_model_name(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` is a registered model, a ``package.module:function``
    path or ``timm/<name>`` (whether the path imports is checked when the model is built)."""
    if name in MODELS:
        return
    if not is_external(name):
        raise ValueError(MODELS.unknown(name))
    check_name(name)


def create_model(
    name: str,
    num_classes: int,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    image_size: int = 32,
    **kwargs: Any,
) -> Classifier | ExternalClassifier:
    """Build a registered model, a ``package.module:function`` constructor or ``timm/<name>``.

    Args:
        name: one of :func:`list_models`, ``package.module:function`` or ``timm/<name>``.
        num_classes: number of output logits.
        mean, std: per-channel pixel statistics used by the model's input normalisation.
        image_size: side of the square images (external models are checked on a probe batch).
        **kwargs: architecture options (e.g. ``in_chans``); for an external model, options of
            :func:`rlmix.models.external.build_external` (``in_chans``, ``normalize``) and its
            constructor's.
    """
    check_model_name(name)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if name not in MODELS:
        return build_external(
            name, num_classes, mean=mean, std=std, image_size=image_size, **kwargs
        )
    return MODELS.get(name)(num_classes=num_classes, mean=mean, std=std, **kwargs)


# Architectures register on import.
from rlmix.models import preact_resnet, resnet_tiny, resnext, wide_resnet  # noqa: E402, F401

__all__ = [
    "MODELS",
    "Classifier",
    "ExternalClassifier",
    "check_model_name",
    "create_model",
    "list_models",
    "register_model",
]
