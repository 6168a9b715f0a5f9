"""The paper's comparison set as mixers: SaliencyMix, PuzzleMix, Co-Mixup and Manifold Mixup.

Each follows its authors' algorithm and CIFAR defaults (docs/environment.md lists every
hyper-parameter with its source) and registers in :data:`rlmix.mixing.MIXERS`, so
``create_mixer("puzzlemix")`` builds it and the training engine runs it like R-Mix:

- :class:`SaliencyMix` (Uddin et al. 2021): a CutMix box centred on the peak of the partner's
  fine-grained static saliency map (:func:`fine_grained_saliency`), no model pass;
- :class:`PuzzleMix` (Kim, Choo and Song 2020): a graph-cut mask over the clean batch's input
  saliency, then an optimal-transport move of each image's salient blocks into its mask;
- :class:`CoMixup` (Kim et al. 2021): a batch-level assignment of grid cells to inputs with a
  supermodular diversity term, solved by graph cuts;
- :class:`ManifoldMixup` (Verma et al. 2019): Mixup of the hidden state after a random stage.

PuzzleMix and Co-Mixup solve their graph cuts with ``gco-wrapper``, the binding their authors use
(the ``rlmix[graphcut]`` extra), imported only when such a mixer is built.
"""

from rlmix.mixers.comixup import CoMixup, ComixupParams, comixup_assign, comixup_objective
from rlmix.mixers.manifold import ManifoldMixup, ManifoldParams, model_stages
from rlmix.mixers.puzzlemix import PuzzleMix, puzzlemix, puzzlemix_mask, transport_plan
from rlmix.mixers.saliencymix import (
    SaliencyMix,
    SaliencyMixParams,
    fine_grained_saliency,
    saliency_box,
)

__all__ = [
    "CoMixup",
    "ComixupParams",
    "ManifoldMixup",
    "ManifoldParams",
    "PuzzleMix",
    "SaliencyMix",
    "SaliencyMixParams",
    "comixup_assign",
    "comixup_objective",
    "fine_grained_saliency",
    "model_stages",
    "puzzlemix",
    "puzzlemix_mask",
    "saliency_box",
    "transport_plan",
]
