"""Fixed mix-up policies (R-Mix, constant top-k, CutMix+, Mixup, vanilla) for the env."""

from baselines.policies import FixedPolicy, list_policies, make_policy, policy_mixer

__all__ = ["FixedPolicy", "list_policies", "make_policy", "policy_mixer"]
