"""Manifold Mixup (Verma et al. 2019): Mixup of the hidden state after a random stage.

Per batch: lam ~ Beta(alpha, alpha), one permutation, and a layer k drawn uniformly from
``layers`` [0, 1, 2: the authors' ``random.randint(0, 2)`` on their PreActResNet]; k = 0 is input
Mixup, k >= 1 replaces the output h of stage k by ``lam * h + (1 - lam) * h[perm]`` during the
training forward. Labels mix with lam. The authors' CIFAR alpha is 2.0 (``--mixup_alpha``); here
it is the run's alpha (the paper's 1.0 unless set).

**Model protocol.** A model takes part if it has ``stages``: an ordered sequence of modules
whose outputs are the hidden states after each stage (stage 1 first). Every rlmix model has one
(the last block of each residual stage; the stem belongs to stage 1, as in the authors' code), a
``package.module:function`` or timm model is used through its own ``stages`` (timm's ConvNeXt,
RegNet, ... name their stages so), and ``nn.parallel.DistributedDataParallel`` is looked through.
The mix is a forward hook on the chosen stage, so the model's ``forward`` runs unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rlmix.mixing import (
    MIXERS,
    Mixer,
    MixParams,
    _check_mix,
    _draw_int,
    _lam_pair,
    _mix_labels,
    batch_lam_only,
    mixup,
)
from rlmix.models.external import ExternalClassifier

__all__ = ["ManifoldMixup", "ManifoldParams", "model_stages"]


def model_stages(model: nn.Module) -> list[nn.Module]:
    """The modules whose outputs are ``model``'s hidden states, stage 1 first (its ``stages``).

    Raises:
        ValueError: the model has no ``stages``, or they are not a non-empty sequence of modules.
    """
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    name = type(model).__name__
    if isinstance(model, ExternalClassifier):  # name the user's model, not the wrapper
        name = f"'{model.name}' ({type(model.net).__name__})"
    found = getattr(model, "stages", None)
    if found is None:
        raise ValueError(
            f"manifold_mixup mixes hidden states, but the model {name} has no `stages` "
            "(an ordered sequence of modules whose outputs are its hidden states; "
            "see docs/environment.md)"
        )
    iterable = isinstance(found, (Sequence, nn.Sequential, nn.ModuleList))
    stages = list(found) if iterable else []
    if not stages or not all(isinstance(s, nn.Module) for s in stages):
        raise ValueError(
            f"the `stages` of the model {name} must be a non-empty sequence of nn.Module, "
            f"got {type(found).__name__}"
        )
    return stages


@dataclass(frozen=True)
class ManifoldParams(MixParams):
    """:class:`rlmix.mixing.MixParams` plus ``layer``: 0 mixes the input, k >= 1 the output of
    stage k."""

    layer: int = 0


@MIXERS.register("manifold_mixup")
class ManifoldMixup(Mixer):
    """Manifold Mixup as a mixer: ``sample`` draws lam, the permutation and the layer;
    ``apply`` mixes the input (layer 0) or only the labels, and :meth:`forward_context` mixes
    the hidden state inside the model's forward.

    The drop-in call is ``manifold(model, x, y) -> (logits, y_mix)``: it runs the mixed forward
    itself.

    Args:
        num_classes: as :class:`rlmix.mixing.Mixer`, whose keywords it takes (``lam_mode`` must
            be ``batch``).
        layers: the layers drawn from (0: input; k: after stage k) [0, 1, 2].
    """

    def __init__(
        self, num_classes: int | None = None, *, layers: Sequence[int] = (0, 1, 2), **kwargs: Any
    ) -> None:
        super().__init__(num_classes, **kwargs)
        batch_lam_only("manifold_mixup", self.lam_mode)
        layers = tuple(layers)
        if not layers or any(
            isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in layers
        ):
            raise ValueError(f"layers must be a non-empty sequence of integers >= 0, got {layers}")
        self.layers = layers

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> ManifoldParams:
        params = super().sample(x, generator)
        layer = self.layers[_draw_int(len(self.layers), self._stream(generator))]
        return ManifoldParams(params.lam, params.perm, layer=layer)

    def apply(self, x, y, params, **inputs):
        if not isinstance(params, ManifoldParams):
            raise TypeError("ManifoldMixup.apply needs ManifoldParams from ManifoldMixup.sample")
        if params.layer == 0:
            return mixup(x, y, params.lam, params.perm)
        b, _, _, lam = _check_mix(x, y, params.lam, params.perm)
        y_dtype = torch.promote_types(y.dtype, torch.float32)
        return x, _mix_labels(y, params.perm, *_lam_pair(lam, b, y_dtype, y.device))

    def check_model(self, model: nn.Module) -> None:
        stages = model_stages(model)
        if max(self.layers) > len(stages):
            raise ValueError(
                f"manifold_mixup layer {max(self.layers)} is past the last of the "
                f"{len(stages)} stages of {type(model).__name__}"
            )

    @contextlib.contextmanager
    def forward_context(self, model: nn.Module, params: MixParams) -> Iterator[None]:
        if not isinstance(params, ManifoldParams) or params.layer == 0:
            yield
            return
        stage = model_stages(model)[params.layer - 1]
        lam, perm = params.lam, params.perm

        def mix(module: nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"stage {params.layer} must output a tensor to be mixed")
            return lam * out + (1 - lam) * out[perm.to(out.device)]

        handle = stage.register_forward_hook(mix)
        try:
            yield
        finally:
            handle.remove()

    def __call__(  # type: ignore[override]
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits (B, N) of the mixed forward of images (B, C, H, W), and the mixed soft
        labels, for labels (B,) long or (B, N) soft."""
        self.check_model(model)
        params = self.sample(x)
        x_in, y_mix = self.apply(x, self.soft_labels(y, x.dtype), params)
        with self.forward_context(model, params):
            return model(x_in), y_mix
