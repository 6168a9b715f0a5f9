"""rlmix: R-Mix and RL-Mix, saliency-guided random mix-up and an RL agent that picks the mix."""

__version__ = "0.1.0"
