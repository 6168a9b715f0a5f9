"""The Gymnasium environment: one classifier training epoch per episode, one batch per step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from envs.rewards import Reward, RewardInputs, RewardNeeds, reward_for
from envs.spaces import batch_observation, batch_spaces, check_action, partner_observation
from rlmix import distributed
from rlmix.config import Config, load_config
from rlmix.errors import ConfigError, RlmixError
from rlmix.mixing import MixParams, topk_space
from rlmix.seeding import stream_generator
from rlmix.trainer import Batch, StepOutput, Trainer

ObsType = dict[str, np.ndarray]
ActType = np.ndarray


class MixupEnv(gym.Env[ObsType, ActType]):
    """Choose, per image of each training batch, the saliency percentile R-Mix thresholds at.

    An episode is one training epoch of a persistent classifier; a step is one mini-batch.

    **Observation** ``Dict``:
      - ``saliency``: ``Box(0, 1, (B, g, g), float32)``, each image's input saliency average-pooled
        to ``g x g`` (``env.obs_grid``, 8) and normalised to sum to 1;
      - ``logits``: ``Box(-L, L, (B, N), float32)``, the classifier's logits for the batch from the
        same forward pass, clipped to ``L`` (``env.logit_clip``);
      - with ``env.partner_first`` (partner-aware decisions), the batch's mixing parameters,
        drawn before the action: ``partner`` (``MultiDiscrete([B] * B)``, image i's partner),
        ``lam`` (``Box(0, 1, (B,))``, image i's lam) and ``grid`` (``Box(0, 1, (1,))``,
        1 / the grid side). The step then mixes with exactly those draws (the same ones R-Mix
        would have drawn after the action: the epoch's mixing stream is consumed in the same
        order, so for the same actions training is bit-identical with the option off).

    **Action** ``MultiDiscrete([K] * B)``: per image, an index into the top-k space
    ``linspace(0, 0.99, K)``; anything else (another shape, floats, negative, >= K) raises
    ``ValueError``. With ``mix.mixer`` other than ``rmix`` the action is accepted and ignored
    (that is how CutMix+, Mixup, vanilla and the paper's comparison set (SaliencyMix,
    PuzzleMix, Co-Mixup, Manifold Mixup) run through the same env).

    **Step**: R-Mix the observed batch with those top-k (lam, perm and grid drawn per batch), take
    one optimiser + OneCycleLR step, compute the reward (``env.reward``, see
    :mod:`envs.rewards`), then observe the next batch.

    **Reward**: the mean over images of the reward function's per-image values (a batch-level
    reward is the same for every image). ``info["reward_per_image"]`` holds the (B,) float64
    vector, in batch order: the per-image credit the RL-Mix agent learns from
    (:class:`envs.ImageSlotVecEnv`).

    **Same-batch counterfactual** (every ``env.counterfactual_every``-th step, R-Mix only): the
    same batch, saliency, lam, partners and grid are also mixed with a top-k per image drawn
    uniformly (what R-Mix would have done, from its own random stream) and scored by every
    reward that has a counterfactual, on the weights before the step, without an optimiser step
    and with BatchNorm statistics and all training streams untouched: turning it on leaves
    training bit-identical. ``info["policy_gain/<reward>"]`` is then the mean over images of
    r(taken) - r(counterfactual), and ``info["counterfactual_per_image"]`` the main reward's
    counterfactual vector.

    **Episode end**: after the epoch's last batch the step returns ``truncated=True`` (training
    goes on; nothing terminates). ``info`` holds plain floats: ``train_loss``, ``lr``, ``mean_q``,
    ``lam`` (the batch mean of lam), ``grid``, ``epoch``, ``reward/<name>``, ``policy_gain/<name>``
    (counterfactual steps); at an evaluated epoch end also
    ``test/<metric>`` from :func:`rlmix.metrics.evaluate` (every ``env.eval_every`` epochs and
    after the last one); ``reward/<name>`` also for every reward of ``env.log_rewards``
    (computed and logged only, e.g. to score a fixed policy on the agent's reward); and two (B,)
    float64 arrays, ``reward_per_image`` and ``lam_per_image`` (each image's lam: all equal
    unless ``mix.lam_mode`` is ``elem``).

    **torchrun**: on W ranks each env holds one shard (B / W images) of every global batch and
    its spaces are the shard's; :class:`envs.distributed_env.DistributedMixupEnv` presents the
    global batch on rank 0.

    **Reset and seeding**: the classifier persists across episodes, so ``reset()`` starts the
    next epoch (a reset before any step of the current epoch restarts it rather than skipping
    it). Every random stream of an epoch (:mod:`rlmix.seeding`) is derived from
    ``(seed, epoch)``. ``reset(seed=s)`` makes ``s`` the run seed and, if the current epoch has
    already taken steps, first rewinds the classifier, optimiser and schedule to the state they
    had when that epoch began. Hence two seeded resets followed by the same actions produce
    identical observations and rewards, and a run resumed from an epoch-boundary checkpoint
    repeats the uninterrupted run exactly on CPU.

    Example::

        import gymnasium as gym, envs
        env = gym.make("rlmix/Mixup-v0", epochs=2, reward="grad_cosine_mean")
        obs, info = env.reset(seed=0)
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        info["reward_per_image"].shape  # (100,)

    Args:
        config: a :class:`rlmix.config.Config`, a YAML path or a shipped config's name, or None
            for the embedded default.
        **overrides: dotted keys (``**{"trainer.lr_max": 0.2}``), unique leaf names
            (``reward="loss_drop"``, ``epochs=2``) or whole sections (``mix={"k": 5}``).
    """

    metadata = {"render_modes": []}

    def __init__(self, config: Config | str | Path | None = None, **overrides: Any) -> None:
        super().__init__()
        if isinstance(config, Config):
            cfg = load_config(config.to_dict(), overrides) if overrides else config
        else:
            cfg = load_config(config, overrides)
        self.cfg = cfg
        self.reward_fn = reward_for(cfg.env.reward, "config key 'env.reward'")
        self.logged_rewards = [
            reward_for(name, "config key 'env.log_rewards'") for name in cfg.env.log_rewards
        ]
        self.rewards: list[Reward] = [self.reward_fn, *self.logged_rewards]
        rewards = self.rewards
        held_out = [r.name for r in rewards if r.held_out]
        if held_out and cfg.data.val_size == 0:
            raise ConfigError(
                f"reward '{held_out[0]}' needs a held-out split: set data.val_size "
                "(images held out of the training budget, e.g. 100)"
            )
        needs = RewardNeeds.of(rewards)
        self.trainer = Trainer(cfg, hold_out=bool(held_out), teacher=needs.teacher)
        self.needs = needs
        self.needs_val_loss = needs.val_loss
        self.needs_val_grad = needs.val_grad
        self.needs_mixed_saliency = needs.mixed_saliency
        self.mixed_record = needs.record  # what of the mixed batch's pass the rewards read
        self.needs_teacher = needs.teacher
        every = cfg.env.counterfactual_every or 0
        self.counterfactual_every = every if self.trainer.mixer.uses_topk else 0
        self.counterfactual_rewards = list(needs.counterfactual)
        self._cf_generator: torch.Generator | None = None
        self.topk_space = topk_space(cfg.mix.k)
        self.partner_first = cfg.env.partner_first
        b = cfg.trainer.batch_size // self.trainer.dist.world_size  # this rank's shard
        n, g = self.trainer.info.num_classes, cfg.env.obs_grid
        self.observation_space, self.action_space = batch_spaces(
            b, n, g, cfg.mix.k, cfg.env.logit_clip, partner=self.partner_first
        )
        self.run_seed = cfg.seed
        self.observe_saliency = (
            cfg.env.observe == "always" or self.trainer.mixer.needs_saliency or needs.clean_saliency
        )
        self._uniform = np.full((b, g, g), 1.0 / (g * g), np.float32)
        self._batch: Batch | None = None
        self._params: MixParams | None = None  # drawn before the action (env.partner_first)
        self._prev_loss: float | None = None
        self.prev_val_loss: float | None = None  # held-out loss after the last step
        self._epoch_val_loss: float | None = None  # ... when the current epoch began
        self.last_eval: dict[str, float] | None = None

    # -- gymnasium API ------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[ObsType, dict[str, Any]]:
        super().reset(seed=seed)
        t = self.trainer
        if seed is not None:
            self.run_seed = int(seed)
            if t.epoch_started and t.step_in_epoch > 0:
                t.rewind_epoch()
                self.prev_val_loss = self._epoch_val_loss
        elif t.epoch_started and t.step_in_epoch > 0:
            t.end_epoch()  # abandon the rest of an unfinished epoch
        t.begin_epoch(self.run_seed)
        self._cf_generator = stream_generator(self.run_seed, "counterfactual", t.epoch, t.dist.rank)
        self._prev_loss = None
        if self.needs_val_loss and self.prev_val_loss is None:
            self.prev_val_loss = t.val_loss()  # the run's first reset
        self._epoch_val_loss = self.prev_val_loss
        self._observe_next()
        return self._observation(self._batch), {"epoch": float(t.epoch)}

    def step(self, action: ActType) -> tuple[ObsType, float, bool, bool, dict[str, Any]]:
        if self._batch is None:
            raise RuntimeError("call reset() before step()")
        t, r = self.trainer, self.reward_fn
        action_t = torch.as_tensor(check_action(action, self.action_space))
        q = self.topk_space[action_t]
        if self._params is None:
            x_mix, y_mix, params = distributed.together(lambda: t.mix(self._batch, q))
        else:
            params = self._params
            x_mix, y_mix = t.apply_mix(self._batch, params, q)
        state = self._state_inputs()
        teacher = t.teacher_probs(x_mix) if self.needs_teacher else None
        cf_inputs = None
        if self._counterfactual_due():  # before the step: the same weights as the taken mix
            cf_action = torch.randint(self.cfg.mix.k, q.shape, generator=self._cf_generator)
            cf_inputs = self.mix_inputs(params, cf_action, state=state)
        out = t.train_step(
            x_mix,
            y_mix,
            params=params,
            clean_loss=self._batch.clean_loss,
            input_grad=self.needs_mixed_saliency,
            mixed=self.mixed_record,
        )
        loss = float(out.loss)
        info: dict[str, Any] = {
            "train_loss": loss,
            "lr": t.lr,
            "mean_q": float(q.mean()),
            "lam": params.lam_mean,  # the batch mean (mix.lam_mode: elem draws one per image)
            "lam_per_image": params.lam_per_image.numpy(),
            "grid": float(params.grid),
            "epoch": float(t.epoch),
        }
        truncated = t.epoch_done
        test_metrics = None
        if truncated:
            epoch = t.epoch + 1
            if epoch % self.cfg.env.eval_every == 0 or epoch >= self.cfg.trainer.epochs:
                test_metrics = t.evaluate()
                info.update({f"test/{k}": float(v) for k, v in test_metrics.items()})
        val_loss = t.val_loss() if self.needs_val_loss else None
        inputs = RewardInputs(
            q=q,
            loss=loss,
            action=action_t,
            mixed_saliency=out.mixed_saliency,
            mixed=out.mixed,
            teacher_probs=teacher,
            val_loss=val_loss,
            test_metrics=test_metrics,
            params=params,
            **state,
        )
        scored = {reward.name: self._score(reward, inputs) for reward in self.rewards}
        per_image = scored[r.name]
        info.update({f"reward/{name}": float(v.mean()) for name, v in scored.items()})
        if cf_inputs is not None:
            for reward in self.counterfactual_rewards:
                cf_values = self._score(reward, cf_inputs)
                info[f"policy_gain/{reward.name}"] = float((scored[reward.name] - cf_values).mean())
                if reward is r:
                    info["counterfactual_per_image"] = cf_values
        info["reward_per_image"] = per_image
        self._prev_loss = loss
        self.prev_val_loss = val_loss
        if truncated:
            if test_metrics is not None:
                self.last_eval = test_metrics
            obs = self._observation(self._batch)
            t.end_epoch()
            self._batch = self._params = None
        else:
            self._observe_next()
            obs = self._observation(self._batch)
        return obs, float(per_image.mean()), False, truncated, info

    # -- scoring a mix without taking it --------------------------------------------------------

    def _state_inputs(self) -> dict[str, Any]:
        """The :class:`RewardInputs` fields that describe the state before this step (the same
        for every mix of the batch): the clean batch, the held-out gradient, the history."""
        return {
            "k": self.cfg.mix.k,
            "prev_loss": self._prev_loss,
            "obs_grid": self.cfg.env.obs_grid,
            "clean_saliency": self._batch.saliency,
            "logits": self._batch.logits,
            "prev_val_loss": self.prev_val_loss,
            "prev_test_metrics": self.last_eval,
            "val_grad": self.trainer.held_out_grad() if self.needs_val_grad else None,
        }

    def score(self, inputs: RewardInputs) -> dict[str, np.ndarray]:
        """Every counterfactual-capable reward (per image) of a mix described by ``inputs``
        (:meth:`mix_inputs`: the same-batch counterfactual, changing nothing)."""
        return {r.name: self._score(r, inputs) for r in self.counterfactual_rewards}

    def mix_inputs(
        self,
        params: MixParams,
        action: torch.Tensor,
        *,
        partner_action: torch.Tensor | None = None,
        state: dict[str, Any] | None = None,
    ) -> RewardInputs:
        """The :class:`RewardInputs` of mixing the current batch with ``params`` and top-k
        ``action`` (B,) long, on the current weights, changing nothing
        (:meth:`rlmix.trainer.Trainer.probe`). With ``partner_action`` each image's partner is
        thresholded at that action instead (one image's choice varied, its partner's held:
        :func:`rlmix.mixing.rmix`'s ``q_partner``). ``state`` is :meth:`_state_inputs` of the
        current batch (computed when None)."""
        if self._batch is None:
            raise RuntimeError("call reset() before scoring a mix")
        t = self.trainer
        q = self.topk_space[action]
        q_partner = None if partner_action is None else self.topk_space[partner_action]
        x, y = t.apply_mix(self._batch, params, q, q_partner)
        out = StepOutput(torch.tensor(float("nan")))  # no reward reads the mix's own pass
        if self.needs.counterfactual_pass:
            out = t.probe(x, y, input_grad=self.needs_mixed_saliency, mixed=self.mixed_record)
        return RewardInputs(
            q=q,
            loss=float(out.loss),
            action=action,
            mixed_saliency=out.mixed_saliency,
            mixed=out.mixed,
            teacher_probs=t.teacher_probs(x) if self.needs_teacher else None,
            params=params,
            counterfactual=True,
            **(self._state_inputs() if state is None else state),
        )

    # -- helpers ------------------------------------------------------------------------------

    def _observe_next(self) -> None:
        """Fetch the next batch; with ``env.partner_first`` also draw its mixing parameters
        (from the epoch's mixing stream, as :meth:`rlmix.trainer.Trainer.mix` would)."""
        t = self.trainer
        self._batch = t.observe(saliency=self.observe_saliency)
        self._params = t.mixer.sample(self._batch.x, t.generator) if self.partner_first else None

    def _counterfactual_due(self) -> bool:
        every = self.counterfactual_every
        return bool(every and self.counterfactual_rewards and self.trainer.global_step % every == 0)

    def _score(self, reward: Reward, inputs: RewardInputs) -> np.ndarray:
        """The per-image values of ``reward``; a reward that raises or is not finite on any rank
        stops every rank with the same error."""
        values, problem = np.zeros(0), None
        try:
            values = reward(inputs)
        except RlmixError as e:
            problem = e
        else:
            if not np.isfinite(values).all():
                t = self.trainer
                step = t.step_in_epoch + (1 if inputs.counterfactual else 0)
                what = " on the counterfactual mix" if inputs.counterfactual else ""
                problem = (
                    f"reward '{reward.name}' is {values[~np.isfinite(values)][0]}{what} at "
                    f"epoch {t.epoch + 1}, step {step}; stopping"
                )
        distributed.agree(problem)
        return values

    def _observation(self, batch: Batch) -> ObsType:
        if batch.saliency is None:
            obs = {
                "saliency": self._uniform.copy(),
                "logits": np.zeros(self.observation_space["logits"].shape, np.float32),
            }
            if self._params is not None:
                obs.update(partner_observation(self._params, batch.x.shape[0]))
            return obs
        return batch_observation(
            batch.saliency,
            batch.logits,
            self.cfg.env.obs_grid,
            self.cfg.env.logit_clip,
            self._params,
        )

    def state_dict(self) -> dict[str, Any]:
        """Env state at the last epoch boundary: the trainer's and what rewards carry over."""
        return {
            "trainer": self.trainer.boundary_state(),
            "run_seed": self.run_seed,
            "last_eval": self.last_eval,
            "prev_val_loss": self.prev_val_loss,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trainer.load_state_dict(state["trainer"])
        self.run_seed = int(state["run_seed"])
        self.last_eval = state["last_eval"]
        self.prev_val_loss = state.get("prev_val_loss")
        self._batch = self._params = None
