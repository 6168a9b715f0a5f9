"""Fixed mix-up policies (R-Mix, constant top-k, CutMix+, Mixup, vanilla, SaliencyMix, PuzzleMix,
Co-Mixup, Manifold Mixup) and the runner that drives them through the image-slot env with SB3's
callback protocol."""

from baselines.policies import (
    POLICIES,
    FixedPolicy,
    list_policies,
    make_policy,
    policy_mixer,
    register_policy,
)
from baselines.runner import PolicyRunner

__all__ = [
    "POLICIES",
    "FixedPolicy",
    "PolicyRunner",
    "list_policies",
    "make_policy",
    "policy_mixer",
    "register_policy",
]
