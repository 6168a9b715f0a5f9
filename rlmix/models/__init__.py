"""Model registry: ``create_model(name, num_classes)`` and ``list_models()``.

Architectures register themselves with ``@register_model``; every model is a
:class:`rlmix.models.base.Classifier` taking [0, 1] pixel images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rlmix.models.base import Classifier
from rlmix.registry import Registry

MODELS: Registry[Callable[..., Classifier]] = Registry("model")


def register_model(fn: Callable[..., Classifier]) -> Callable[..., Classifier]:
    """Register a model constructor under its function name."""
    return MODELS.add(fn.__name__, fn)


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return MODELS.names()


def create_model(
    name: str,
    num_classes: int,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **kwargs,
) -> Classifier:
    """Build a registered model.

    Args:
        name: one of :func:`list_models`.
        num_classes: number of output logits.
        mean, std: per-channel pixel statistics used by the model's input normalisation.
        **kwargs: architecture options (e.g. ``in_chans``).
    """
    builder = MODELS.get(name)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    return builder(num_classes=num_classes, mean=mean, std=std, **kwargs)


# Architectures register on import.
from rlmix.models import preact_resnet, resnet_tiny, resnext, wide_resnet  # noqa: E402, F401

__all__ = ["MODELS", "Classifier", "create_model", "list_models", "register_model"]
