"""Models from outside rlmix: ``package.module:function`` constructors and ``timm/<name>``.

:func:`build_external` calls the constructor (``function(num_classes=N, **model.options)``, or
``timm.create_model(name, num_classes=N, in_chans=C, pretrained=False, **model.options)``) and
wraps the module it returns in an :class:`ExternalClassifier`, which behaves like the built-in
:class:`rlmix.models.base.Classifier`: it takes [0, 1] pixel images and normalises them with the
dataset's mean and std before calling the user's module (``model.options.normalize: false``
leaves normalising to the module), so saliency and FGSM stay in pixel space.

One eval-mode forward of a probe batch (2 random images of the data's size, drawn from a private
generator) checks the logits' shape and finds, once,

- the final linear layer: ``get_classifier()`` (timm's convention) when it returns an
  ``nn.Linear``, else the last ``nn.Linear`` of the module; either must output the logits
  themselves. Last-layer rewards read its inputs (the penultimate features h);
- the feature map (B, F, h, w), larger than 1x1, whose spatial mean is that layer's input (the
  input of a global average pool), for class activation maps.

What cannot be found fails with one line only when something needs it.

Then one train-mode forward and backward of a batch of another size (3) checks what training
needs and the eval probe cannot see: the module has parameters to train, gives logits (not a
tuple of auxiliary outputs, as torchvision's GoogLeNet and Inception do in train mode) of the
right shape for any batch size, and gradients reach the pixels (saliency) and the weights (no
``torch.no_grad`` or ``detach`` in its forward). The probes leave the module as they found it:
modes, buffers (BatchNorm statistics), gradients and the global random streams.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from rlmix.errors import ConfigError
from rlmix.hub import offline, unreachable
from rlmix.models.base import register_pixel_stats

TIMM_PREFIX = "timm/"
PROBE_BATCH = 2
TRAIN_PROBE_BATCH = 3  # not the eval probe's size: a forward tied to one batch size fails


def is_external(name: str) -> bool:
    """Whether ``name`` names a user (``module:function``) or timm (``timm/<name>``) model."""
    return name.startswith(TIMM_PREFIX) or ":" in name


def check_name(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` is a well-formed external model name."""
    if name.startswith(TIMM_PREFIX):
        if not name[len(TIMM_PREFIX) :]:
            raise ValueError(f"model '{name}' names no timm architecture: use timm/<name>")
        return
    module, _, attr = name.partition(":")
    if not (all(p.isidentifier() for p in module.split(".")) and attr.isidentifier()):
        raise ValueError(f"model '{name}' must look like package.module:function")


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else ""


def _describe(e: BaseException) -> str:
    text = _first_line(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _timm_constructor(name: str) -> Callable[..., Any]:
    arch = name[len(TIMM_PREFIX) :]
    try:
        import timm
    except ImportError as e:
        raise ConfigError(f"model '{name}' needs timm: pip install 'rlmix[timm]'") from e
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=1)
        hint = f"; did you mean 'timm/{close[0]}'?" if close else ""
        raise ConfigError(f"model '{name}': timm has no architecture '{arch}'{hint}")
    return functools.partial(timm.create_model, arch, pretrained=False)


def _user_constructor(name: str) -> Callable[..., Any]:
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"cannot import model '{name}': {_first_line(e)}") from e
    except Exception as e:
        raise ConfigError(f"cannot import model '{name}': importing raised {_describe(e)}") from e
    fn = getattr(module, attr, None)
    if fn is None:
        raise ConfigError(
            f"cannot import model '{name}': module '{module_name}' has no attribute '{attr}'"
        )
    if not callable(fn):
        raise ConfigError(f"model '{name}' is not callable (got {type(fn).__name__})")
    return fn


def _takes_in_chans(fn: Callable[..., Any]) -> bool:
    try:
        return "in_chans" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False


def build_external(
    name: str,
    num_classes: int,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    in_chans: int = 3,
    image_size: int = 32,
    normalize: bool = True,
    **options: Any,
) -> ExternalClassifier:
    """Build and wrap a ``module:function`` or ``timm/<name>`` model (see the module docstring).

    Args:
        name: ``package.module:function`` or ``timm/<architecture>``.
        num_classes: number of logits N the model must output.
        mean, std: the data's per-channel pixel statistics (length ``in_chans``).
        in_chans: channels C of the data; timm and constructors with an ``in_chans`` parameter
            get it, a module whose first ``Conv2d`` takes 3 channels gets 1-channel data
            repeated 3 times, any other mismatch fails.
        image_size: side of the (square) probe images.
        normalize: normalise with mean and std in the wrapper (else the module gets pixels).
        **options: passed to the constructor (``model.options``).

    Raises:
        ConfigError: one line naming the model and what went wrong.
    """
    check_name(name)
    if not isinstance(normalize, bool):
        raise ConfigError(
            f"model '{name}': option normalize must be true or false (got {normalize!r})"
        )
    timm_model = name.startswith(TIMM_PREFIX)
    fn = _timm_constructor(name) if timm_model else _user_constructor(name)
    kwargs = dict(options)
    if timm_model or _takes_in_chans(fn):
        kwargs["in_chans"] = in_chans
    # timm's weights come from the Hugging Face hub: checked first, as offline its client
    # retries for a minute; out of reach, only the local cache is read
    away = unreachable() if timm_model and options.get("pretrained") else None
    try:
        with offline(away is not None):
            net = fn(num_classes=num_classes, **kwargs)
    except Exception as e:
        hint = ""
        if options.get("pretrained"):
            reach = f"; the Hugging Face hub is out of reach: {away}" if away else ""
            hint = f" (pretrained weights need a network or a local cache of them{reach})"
        raise ConfigError(f"model '{name}' raised {_describe(e)}{hint}") from e
    if not isinstance(net, nn.Module):
        raise ConfigError(f"model '{name}' must return a torch.nn.Module, got {type(net).__name__}")
    model = ExternalClassifier(
        net,
        name=name,
        num_classes=num_classes,
        mean=mean if normalize else None,
        std=std if normalize else None,
        in_chans=in_chans,
    )
    model.examine(image_size)
    return model


class ExternalClassifier(nn.Module):
    """[0, 1] pixels -> normalise -> (1 -> 3 channels) -> the user's module ``net`` -> logits.

    Offers the :class:`rlmix.models.base.Classifier` interface (``get_classifier``,
    ``forward_features``, ``forward_head``) where the module's structure allows it; call
    :meth:`examine` once after construction (:func:`build_external` does).

    Args:
        net: the user's module, mapping (B, C', H, W) inputs to (B, N) logits.
        name: the model's name, for messages.
        num_classes: number of logits N.
        mean, std: per-channel pixel statistics, length ``in_chans`` (default 0 and 1: no
            normalisation).
        in_chans: channels C of the images the wrapper takes.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        name: str,
        num_classes: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        try:
            register_pixel_stats(self, mean, std, in_chans)
        except ValueError as e:
            raise ConfigError(f"model '{name}': {e}") from e
        self.net = net
        self.name = name
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.repeat = self._repeat_channels()
        self.num_features: int | None = None
        # Submodule paths inside ``net`` found by examine(); None with the reason when missing.
        self._head: str | None = None
        self._head_missing = "examine() has not run"
        self._pool: str | None = None
        self.cam_unavailable: str | None = "examine() has not run"

    def _repeat_channels(self) -> bool:
        """Whether 1-channel images must be repeated for a stem that takes 3 channels."""
        stem = next((m for m in self.net.modules() if isinstance(m, nn.Conv2d)), None)
        takes = stem.in_channels if stem is not None else 0
        if takes in (0, self.in_chans):  # no Conv2d or a lazy one: nothing to check
            return False
        if self.in_chans == 1 and takes == 3:
            return True
        raise ConfigError(
            f"model '{self.name}' takes {takes}-channel images (its first Conv2d), "
            f"the data has {self.in_chans}"
        )

    @property
    def stages(self) -> Sequence[nn.Module] | None:
        """The user's module's ``stages`` (Manifold Mixup's hidden layers), or None."""
        return getattr(self.net, "stages", None)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map [0, 1] pixels (B, C, H, W) to the module's inputs."""
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return x.expand(-1, 3, -1, -1) if self.repeat else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))

    # -- what the probe finds ----------------------------------------------------------------

    @torch.no_grad()
    def examine(self, image_size: int) -> None:
        """One eval-mode forward of a probe batch: check the logits' shape, find the final
        linear layer and the feature map it pools; then the train-mode probe
        (:meth:`_probe_training`). Modes and buffers are left as they were."""
        device = next((t.device for t in (*self.parameters(), *self.buffers())), None)
        x = torch.rand(
            (PROBE_BATCH, self.in_chans, image_size, image_size),
            generator=torch.Generator().manual_seed(0),
        ).to(device)
        order = itertools.count()
        last_input: dict[str, tuple[int, torch.Tensor]] = {}  # path -> (call order, input)
        outputs: dict[str, torch.Tensor] = {}  # nn.Linear path -> output

        def record(path: str) -> Callable[..., None]:
            def hook(_module: nn.Module, args: tuple[Any, ...]) -> None:
                if args and isinstance(args[0], torch.Tensor):
                    last_input[path] = (next(order), args[0])

            return hook

        def record_output(path: str) -> Callable[..., None]:
            def hook(_module: nn.Module, _args: tuple[Any, ...], out: Any) -> None:
                outputs[path] = out

            return hook

        handles = []
        for path, module in self.net.named_modules():
            handles.append(module.register_forward_pre_hook(record(path)))
            if isinstance(module, nn.Linear):
                handles.append(module.register_forward_hook(record_output(path)))
        modes = [(m, m.training) for m in self.modules()]
        self.eval()
        try:
            logits = self(x)
        except Exception as e:
            raise ConfigError(
                f"model '{self.name}' failed on a probe batch of shape {tuple(x.shape)}: "
                f"{_describe(e)}"
            ) from e
        finally:
            for handle in handles:
                handle.remove()
            for module, training in modes:
                module.training = training
        expected = (PROBE_BATCH, self.num_classes)
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
            got = (
                f"shape {tuple(logits.shape)}"
                if isinstance(logits, torch.Tensor)
                else type(logits).__name__
            )
            raise ConfigError(
                f"model '{self.name}' returned {got} for a probe batch of shape "
                f"{tuple(x.shape)}; expected logits of shape {expected}"
            )
        self._find_head(logits, outputs)
        self._find_pool(last_input)
        self._probe_training(image_size, device)

    def _probe_training(self, image_size: int, device: torch.device | None) -> None:
        """One train-mode forward and backward of a batch of another size (see the module
        docstring); modes, buffers and the global random streams are restored after it.

        Raises:
            ConfigError: the module has no parameters to train, fails or gives no logits in
                train mode, or its logits carry no gradient to the pixels or the weights.
        """
        trainable = [p for p in self.parameters() if p.requires_grad]
        if not trainable:
            has = "no" if next(self.parameters(), None) is None else "only frozen"
            raise ConfigError(f"model '{self.name}' has {has} parameters: nothing to train")
        shape = (TRAIN_PROBE_BATCH, self.in_chans, image_size, image_size)
        x = torch.rand(shape, generator=torch.Generator().manual_seed(1)).to(device)
        where = f"in train mode for a probe batch of shape {shape}"
        modes = [(m, m.training) for m in self.modules()]
        buffers = [(b, b.detach().clone()) for b in self.buffers()]
        cuda = [device] if device is not None and device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=cuda), torch.enable_grad():
                self.train()
                try:
                    logits = self(x.requires_grad_(True))
                except Exception as e:
                    raise ConfigError(
                        f"model '{self.name}' failed {where} (in eval mode a batch of "
                        f"{PROBE_BATCH} passed): {_describe(e)}"
                    ) from e
                self._check_train_logits(logits, where)
                grads = torch.autograd.grad(
                    logits.float().logsumexp(dim=1).sum(), [x, *trainable], allow_unused=True
                )
        finally:
            for module, training in modes:
                module.training = training
            with torch.no_grad():
                for buffer, value in buffers:
                    buffer.copy_(value)
        if grads[0] is None:
            raise ConfigError(
                f"model '{self.name}': its logits {where} carry no gradient to the pixels (does "
                "its forward detach its input?); saliency needs them"
            )
        if all(g is None for g in grads[1:]):
            raise ConfigError(
                f"model '{self.name}': its logits {where} carry no gradient to its weights "
                "(does its forward run under torch.no_grad() or detach?); nothing would train"
            )

    def _check_train_logits(self, logits: Any, where: str) -> None:
        expected = (TRAIN_PROBE_BATCH, self.num_classes)
        if isinstance(logits, torch.Tensor) and tuple(logits.shape) == expected:
            if logits.grad_fn is None:
                raise ConfigError(
                    f"model '{self.name}' returned logits without gradients {where} (does its "
                    "forward run under torch.no_grad() or detach?); rlmix trains through them"
                )
            return
        got = (
            f"shape {tuple(logits.shape)}"
            if isinstance(logits, torch.Tensor)
            else type(logits).__name__
        )
        hint = (
            " (auxiliary outputs? turn them off in model.options, e.g. {aux_logits: false})"
            if isinstance(logits, tuple)
            else ""
        )
        raise ConfigError(
            f"model '{self.name}' returned {got} {where}; expected logits of shape {expected}, "
            f"as in eval mode{hint}"
        )

    def _find_head(self, logits: torch.Tensor, outputs: dict[str, torch.Tensor]) -> None:
        paths = {module: path for path, module in self.net.named_modules()}
        linears = [m for m in self.net.modules() if isinstance(m, nn.Linear)]
        getter = getattr(self.net, "get_classifier", None)
        try:
            declared = getter() if callable(getter) else None
        except Exception:  # a broken get_classifier(): fall back to the module's layers
            declared = None
        candidates = ([declared] if isinstance(declared, nn.Linear) else []) + linears[::-1]
        for layer in candidates:
            out = outputs.get(paths.get(layer, ""))
            if out is logits or (
                isinstance(out, torch.Tensor)
                and out.shape == logits.shape
                and torch.equal(out, logits)
            ):
                self._head = paths[layer]
                self.num_features = layer.in_features
                return
        self._head = None
        self._head_missing = (
            "it has no nn.Linear layer" if not linears else "no nn.Linear layer outputs its logits"
        )
        if declared is not None and not isinstance(declared, nn.Linear):
            self._head_missing += f" (its get_classifier() gives a {type(declared).__name__})"

    def _find_pool(self, last_input: dict[str, tuple[int, torch.Tensor]]) -> None:
        """The largest (then latest) map (B, F, h, w), h * w > 1, whose spatial mean is the
        head's input: on it ``CAM = fc.weight @ features`` averages to the logits (minus bias)."""
        self._pool = None
        if self._head is None:
            self.cam_unavailable = f"model '{self.name}': {self._head_missing}"
            return
        h = last_input[self._head][1].float()
        best: tuple[int, int] | None = None
        for path, (order, t) in last_input.items():
            if t.dim() != 4 or t.shape[:2] != h.shape or t.shape[2] * t.shape[3] < 2:
                continue
            if torch.allclose(t.float().mean(dim=(2, 3)), h, rtol=1e-4, atol=1e-5):
                rank = (t.shape[2] * t.shape[3], order)
                if best is None or rank > best:
                    best, self._pool = rank, path
        self.cam_unavailable = (
            None
            if self._pool is not None
            else f"model '{self.name}' has no feature map larger than 1x1 that its final linear "
            "layer average-pools"
        )

    # -- the Classifier interface -------------------------------------------------------------

    def get_classifier(self) -> nn.Linear:
        """The final linear layer (its output is the logits).

        Raises:
            ConfigError: the module has none (rewards that read the last layer need it).
        """
        if self._head is None:
            raise ConfigError(
                f"model '{self.name}': {self._head_missing}, and rewards that read the "
                "classifier's last layer (val_grad_align, val_grad_dot) need one; choose another "
                "reward (e.g. teach or grad_cosine)"
            )
        return self.net.get_submodule(self._head)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The feature map (B, F, h, w) the final linear layer average-pools, of pixel images
        x (B, C, H, W) in [0, 1] (one full forward).

        Raises:
            ConfigError: the module has no such map (CAMs need one).
        """
        if self._pool is None:
            raise ConfigError(f"{self.cam_unavailable}: no class activation maps")
        seen: list[torch.Tensor] = []
        hook = self.net.get_submodule(self._pool).register_forward_pre_hook(
            lambda _module, args: seen.append(args[0])
        )
        try:
            self(x)
        finally:
            hook.remove()
        return seen[-1]

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (B, N) from a feature map (B, F, h, w) of :meth:`forward_features`."""
        return self.get_classifier()(features.mean(dim=(2, 3)))


__all__ = ["ExternalClassifier", "build_external", "check_name", "is_external"]
