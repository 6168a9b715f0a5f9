"""Model registry: ``create_model(name, num_classes)`` and ``list_models()``.

Architectures register themselves with ``@register_model``; every model is a
:class:`rlmix.models.base.Classifier` taking [0, 1] pixel images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rlmix.models.base import Classifier

_MODELS: dict[str, Callable[..., Classifier]] = {}


def register_model(fn: Callable[..., Classifier]) -> Callable[..., Classifier]:
    """Register a model constructor under its function name."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is already registered")
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_MODELS)


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
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    return _MODELS[name](num_classes=num_classes, mean=mean, std=std, **kwargs)


# Architectures register on import.
from rlmix.models import preact_resnet, resnet_tiny, resnext, wide_resnet  # noqa: E402, F401

__all__ = ["Classifier", "create_model", "list_models", "register_model"]
