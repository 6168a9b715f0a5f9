"""PPO driven one step at a time: SB3's ``collect_rollouts`` for a caller who owns the loop.

:class:`agents.LearnedMix` cannot hand Stable-Baselines3 an env to step: the user's loop steps.
:class:`StepRollout` holds the per-image PPO agent (:func:`agents.ppo.make_ppo`, built as
``rlmix.train_agent`` builds it) and fills SB3's ``DictRolloutBuffer`` one batch at a time, in
the order ``collect_rollouts`` does (act on the observation, then add the step's rewards with
the episode-start flags, bootstrap a truncated epoch's last step by each slot's value), then
runs SB3's own ``PPO.train`` when the rollout is full. Rollouts end at epoch boundaries, as
:class:`agents.ppo.EpochPPO`'s do, so the updates fall on ``rlmix.train_agent``'s schedule.

Its randomness is its own: torch's (reseeded per epoch, the run's ``global`` stream) and numpy's
(seeded once, as SB3 seeds it) global RNG states are swapped in only while SB3 samples actions
or shuffles minibatches. Under DDP every rank adds the global batch's decisions and runs the
same update; rank 0's weights are then broadcast.
"""

from __future__ import annotations

import contextlib
import random
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import DictRolloutBuffer
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from agents.ppo import EpochPPO, make_ppo
from agents.serialize import agent_state, restore_ppo
from envs.spaces import slot_spaces
from rlmix import distributed
from rlmix.config import Config

Obs = dict[str, np.ndarray]
_FIELDS = ("actions", "rewards", "episode_starts", "values", "log_probs")


class _Slots(VecEnv):
    """The slot spaces PPO is built for; nothing is stepped through it."""

    def __init__(self, num_envs: int, observation: spaces.Dict, action: spaces.Discrete) -> None:
        super().__init__(num_envs, observation, action)

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the rollout is filled step by step: there is no env to step")

    reset = step_async = step_wait = set_attr = env_method = _refuse

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [None] * self.num_envs  # SB3 asks for render_mode

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False] * self.num_envs

    def close(self) -> None:
        pass


@contextlib.contextmanager
def full_precision() -> Iterator[None]:
    """No autocast (the policy is small and Stable-Baselines3's buffers hold float32)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.autocast("cpu", enabled=False))
        if torch.cuda.is_available():
            stack.enter_context(torch.autocast("cuda", enabled=False))
        yield


class _OwnStreams:
    """The agent's torch (CPU) and numpy global RNG states, swapped in for a block."""

    def __init__(self, numpy_state: tuple) -> None:
        self.torch_state = torch.Generator().get_state()
        self.numpy_state = numpy_state

    def reseed_torch(self, seed: int) -> None:
        self.torch_state = torch.Generator().manual_seed(seed).get_state()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        theirs = torch.get_rng_state(), np.random.get_state()  # noqa: NPY002
        torch.set_rng_state(self.torch_state)
        np.random.set_state(self.numpy_state)  # noqa: NPY002
        try:
            with full_precision():
                yield
        finally:
            self.torch_state, self.numpy_state = torch.get_rng_state(), np.random.get_state()  # noqa: NPY002
            torch.set_rng_state(theirs[0])
            np.random.set_state(theirs[1])  # noqa: NPY002


class StepRollout:
    """The per-image PPO agent and its rollout, stepped by the caller (module docstring).

    Args:
        cfg: the run's config (``agent``, ``env.obs_grid``, ``env.logit_clip``, ``mix.k``,
            ``seed``).
        num_classes: N, the classifier's classes.
        partner_first: the slots see their partners (``env.partner_first``).
        logger: SB3's logger for PPO's ``train/`` scalars.
    """

    def __init__(self, cfg: Config, num_classes: int, partner_first: bool, logger: Logger) -> None:
        self.cfg, self.num_classes, self.partner_first = cfg, num_classes, partner_first
        self.logger = logger
        self.ppo: EpochPPO | None = None
        self.streams: _OwnStreams | None = None
        self.buffer: DictRolloutBuffer | None = None
        self.episode_starts: np.ndarray | None = None
        self.update_due = False  # a full rollout waiting for the next observation (gamma > 0)

    # -- the agent ------------------------------------------------------------------------------

    def build(self, num_envs: int, epoch_seed: int, numpy_state: tuple | None = None) -> None:
        """The PPO agent for ``num_envs`` decisions a step, built as ``rlmix.train_agent`` builds
        it (seeded from ``cfg.seed``) without touching the caller's random streams."""
        observation, action = slot_spaces(
            self.num_classes,
            self.cfg.env.obs_grid,
            self.cfg.mix.k,
            self.cfg.env.logit_clip,
            partner=self.partner_first,
        )
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        python_state = random.getstate()
        numpy_theirs = np.random.get_state()  # noqa: NPY002
        with torch.random.fork_rng(devices=devices), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SB3's minibatch-size advice: rollouts are ours
            self.ppo = make_ppo(_Slots(num_envs, observation, action), self.cfg)
            own = np.random.get_state()  # noqa: NPY002
        random.setstate(python_state)
        np.random.set_state(numpy_theirs)  # noqa: NPY002
        self.ppo.set_logger(self.logger)
        self.streams = _OwnStreams(own if numpy_state is None else numpy_state)
        self.streams.reseed_torch(epoch_seed)

    def reseed(self, epoch_seed: int) -> None:
        """A new epoch: the torch stream the agent samples from restarts from ``epoch_seed``."""
        if self.streams is not None:
            self.streams.reseed_torch(epoch_seed)

    def act(self, obs: Obs) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """``(actions (B,), values, log-probabilities)`` of SB3's policy for slot observations."""
        with self.streams.active(), torch.no_grad():
            self.ppo.policy.set_training_mode(False)
            actions, values, log_probs = self.ppo.policy(obs_as_tensor(obs, self.ppo.device))
        return actions.cpu().numpy(), values, log_probs

    def probs(self, obs: Obs) -> np.ndarray:
        """The policy's per-image probabilities (B, K), for the diagnostics."""
        with full_precision():
            return self.ppo.action_probs(obs)

    def values(self, obs: Obs) -> np.ndarray:
        """gamma times each slot's value, one slot at a time (as SB3 bootstraps a truncated
        episode)."""
        b = len(next(iter(obs.values())))
        out = np.zeros(b, dtype=np.float32)
        with torch.no_grad(), full_precision():
            for i in range(b):
                one = self.ppo.policy.obs_to_tensor({k: v[i] for k, v in obs.items()})[0]
                out[i] += self.cfg.agent.gamma * self.ppo.policy.predict_values(one)[0]
        return out

    # -- the rollout ----------------------------------------------------------------------------

    def prepare(self, obs: Obs, steps: int, epoch_seed: int, progress: float, step: int) -> None:
        """Before acting on ``obs``: build the agent on the first call, learn from a rollout
        that waited for this observation, start a rollout of ``steps`` steps (a batch of
        another size ends the one in progress)."""
        b = len(obs["saliency"])
        if self.ppo is None:
            self.build(b, epoch_seed)
        if self.update_due:
            self.learn(np.zeros(self.buffer.n_envs, dtype=bool), progress, step, next_obs=obs)
        if self.buffer is not None and self.buffer.n_envs != b:
            self.learn(np.zeros(self.buffer.n_envs, dtype=bool), progress, step)
            self.episode_starts = np.ones(b, dtype=bool)
        if self.buffer is None:
            self.buffer = self._new_buffer(steps, b)
        if self.episode_starts is None or len(self.episode_starts) != b:
            self.episode_starts = np.ones(b, dtype=bool)

    def store(
        self,
        obs: Obs,
        actions: np.ndarray,
        rewards: np.ndarray,
        values: torch.Tensor,
        log_probs: torch.Tensor,
        done: bool,
        progress: float,
        step: int,
        terminal: Callable[[], Obs],
    ) -> None:
        """Add one step's decisions (SB3's ``collect_rollouts``, one step); learn when the
        rollout is full. ``terminal()`` is the epoch's last observation as seen after the step,
        bootstrapped when ``done`` and ``agent.gamma > 0``."""
        buffer = self.buffer
        self.ppo.num_timesteps += buffer.n_envs
        if done and self.cfg.agent.gamma > 0:
            rewards = rewards + self.values(terminal())
        buffer.add(obs, actions.reshape(-1, 1), rewards, self.episode_starts, values, log_probs)
        dones = np.full(buffer.n_envs, done, dtype=bool)
        self.episode_starts = dones
        if buffer.full:
            if done or self.cfg.agent.gamma == 0:
                self.learn(dones, progress, step)
            else:
                self.update_due = True  # GAE needs the next observation's value

    def end_epoch(self, progress: float, step: int, terminal: Callable[[], Obs] | None) -> None:
        """An epoch ended that the rollout did not see coming: its last step is a truncation
        (bootstrapped from ``terminal()`` when ``agent.gamma > 0``), and the rollout in
        progress is learned from."""
        if self.episode_starts is not None:
            self.episode_starts[:] = True
        if self.buffer is None:
            return
        row = (self.buffer.buffer_size if self.buffer.full else self.buffer.pos) - 1
        if self.cfg.agent.gamma > 0 and row >= 0 and terminal is not None:
            self.buffer.rewards[row] += self.values(terminal())
        self.learn(np.ones(self.buffer.n_envs, dtype=bool), progress, step)

    def learn(
        self, dones: np.ndarray, progress: float, step: int, next_obs: Obs | None = None
    ) -> None:
        """PPO's update on the rollout (a partial one is cut to the steps it holds)."""
        buffer = self.buffer
        if not buffer.full:
            if buffer.pos == 0:
                self.buffer = None
                return
            buffer = self._cut(buffer)
        p = self.ppo
        with self.streams.active(), torch.no_grad():
            if next_obs is not None and len(next_obs["saliency"]) == buffer.n_envs:
                last_values = p.policy.predict_values(obs_as_tensor(next_obs, p.device))
            else:
                last_values = torch.zeros(buffer.n_envs, 1)
            buffer.compute_returns_and_advantage(last_values=last_values, dones=dones)
        p._current_progress_remaining = 1.0 - progress
        p.rollout_buffer = buffer
        with self.streams.active():
            p.train()
        p.logger.dump(step=step)
        self._sync()
        self.buffer = None
        self.update_due = False

    def _new_buffer(self, steps: int, num_envs: int) -> DictRolloutBuffer:
        p = self.ppo
        buffer = DictRolloutBuffer(
            steps,
            p.observation_space,
            p.action_space,
            device=p.device,
            gamma=p.gamma,
            gae_lambda=p.gae_lambda,
            n_envs=num_envs,
        )
        buffer.reset()
        return buffer

    def _cut(self, buffer: DictRolloutBuffer) -> DictRolloutBuffer:
        """The first ``pos`` steps of a rollout as a full buffer of that length."""
        n = buffer.pos
        cut = self._new_buffer(n, buffer.n_envs)
        for key in cut.observations:
            cut.observations[key][:] = buffer.observations[key][:n]
        for name in _FIELDS:
            getattr(cut, name)[:] = getattr(buffer, name)[:n]
        cut.pos, cut.full = n, True
        return cut

    def _sync(self) -> None:
        """Under DDP every rank learned from the same rollout with the same streams; rank 0's
        weights are broadcast so that floating-point differences cannot drift apart."""
        d = distributed.current()
        if not d.enabled:
            return
        for t in self.ppo.policy.state_dict().values():
            buf = t.detach().to(d.device)
            torch.distributed.broadcast(buf, src=0)
            t.copy_(buf.to(t.device))

    # -- state ----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The agent, its streams and the rollout in progress, as tensors and plain values."""
        if self.ppo is None:
            return {"agent": None}
        buffer = None
        if self.buffer is not None:
            b = self.buffer
            buffer = {
                "steps": b.buffer_size,
                "n_envs": b.n_envs,
                "pos": b.pos,
                "full": b.full,
                "observations": {k: torch.from_numpy(v.copy()) for k, v in b.observations.items()},
                **{n: torch.from_numpy(getattr(b, n).copy()) for n in _FIELDS},
            }
        name, keys, pos, has_gauss, cached = self.streams.numpy_state
        return {
            "agent": agent_state(self.ppo),
            "num_envs": int(self.ppo.n_envs),
            "torch": self.streams.torch_state.clone(),
            "numpy": {
                "name": name,
                "keys": torch.from_numpy(keys.astype(np.int64)),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "cached": float(cached),
            },  # fmt: skip
            "buffer": buffer,
            "episode_starts": None
            if self.episode_starts is None
            else torch.from_numpy(self.episode_starts.copy()),
            "update_due": self.update_due,
        }

    def load_state_dict(self, state: dict[str, Any], where: str) -> None:
        if state["agent"] is None:
            return
        n = state["numpy"]
        numpy_state = (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                       n["has_gauss"], n["cached"])  # fmt: skip
        self.build(state["num_envs"], 0, numpy_state)
        restore_ppo(self.ppo, state["agent"], where)
        self.streams.torch_state = state["torch"].clone()
        self.buffer = None
        if state["buffer"] is not None:
            saved = state["buffer"]
            self.buffer = self._new_buffer(saved["steps"], saved["n_envs"])
            for key, value in saved["observations"].items():
                self.buffer.observations[key][:] = value.numpy()
            for name in _FIELDS:
                getattr(self.buffer, name)[:] = saved[name].numpy()
            self.buffer.pos, self.buffer.full = saved["pos"], saved["full"]
        starts = state["episode_starts"]
        self.episode_starts = None if starts is None else starts.numpy().copy()
        self.update_due = state["update_due"]


__all__ = ["StepRollout", "full_precision"]
