"""RL-Mix in the shape of timm's ``train.py``: its ``mixup_fn`` replaced by a learning mixer.

timm's training loop mixes with ``input, target = mixup_fn(input, target)`` before the forward,
under AMP, with a model EMA and a per-update LR schedule. The learning mixer slots into the
same place; the only other line is ``mix.observe(output)`` after the optimiser step::

    python examples/timm_train_loop.py --model resnet18 --epochs 2     # needs 'rlmix[timm]'
    python examples/timm_train_loop.py --fake-data --steps 6            # a smoke run

The data is Fashion-MNIST's labelled budget from rlmix (``--fake-data``: random images), the
model, optimiser, scheduler, loss and EMA are timm's.
"""

from __future__ import annotations

import argparse

import torch
from timm import create_model
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3

from agents import LearnedMix
from rlmix.config import load_config
from rlmix.data.pipeline import build_loaders


def fake_loader(batches: int, batch_size: int, classes: int = 10):
    g = torch.Generator().manual_seed(0)
    return [
        (torch.rand(batch_size, 3, 32, 32, generator=g), torch.randint(classes, (batch_size,), generator=g))
        for _ in range(batches)
    ]  # fmt: skip


def train_one_epoch(epoch, model, loader, optimizer, loss_fn, mix, lr_scheduler, model_ema, amp):
    """timm's ``train_one_epoch``, with RL-Mix where ``mixup_fn`` was."""
    model.train()
    num_updates = epoch * len(loader)
    for input, target in loader:
        input, target = mix(model, input, target)  # was: mixup_fn(input, target)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            output = model(input)
            loss = loss_fn(output, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        mix.observe(output)  # the mixer scores its mix and learns (PPO on its schedule)
        if model_ema is not None:
            model_ema.update(model, step=num_updates)
        num_updates += 1
        lr_scheduler.step_update(num_updates=num_updates)
    return {"loss": float(loss), **mix.history[-1]} if mix.history else {"loss": float(loss)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18", help="a timm model name")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    p.add_argument("--fake-data", action="store_true", help="random images instead of the data")
    p.add_argument("--steps", type=int, default=10, help="batches an epoch with --fake-data")
    args = p.parse_args(argv)
    if args.fake_data:
        loader, classes, channels = fake_loader(args.steps, args.batch_size), 10, 3
    else:
        cfg = load_config("fashion_mnist_study", {"trainer.batch_size": args.batch_size})
        loaders = build_loaders(
            cfg.data, batch_size=args.batch_size, seed=0, device=torch.device("cpu")
        )
        loader, classes, channels = loaders.train, loaders.info.num_classes, loaders.info.channels
    model = create_model(args.model, num_classes=classes, in_chans=channels)
    optimizer = create_optimizer_v2(model, opt="sgd", lr=args.lr, momentum=0.9, weight_decay=1e-4)
    lr_scheduler = CosineLRScheduler(
        optimizer, t_initial=args.epochs * len(loader), t_in_epochs=False
    )
    model_ema = ModelEmaV3(model, decay=0.999)
    mix = LearnedMix(
        classes,
        steps_per_epoch=len(loader),
        total_steps=args.epochs * len(loader),
        optimizer=optimizer,
        lr_max=args.lr,
    )
    row: dict = {}
    for epoch in range(args.epochs):
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        row = train_one_epoch(
            epoch,
            model,
            loader,
            optimizer,
            SoftTargetCrossEntropy(),
            mix,
            lr_scheduler,
            model_ema,
            args.amp,
        )
        gain = row.get("policy_gain", float("nan"))
        print(f"epoch {epoch + 1}: loss {row['loss']:.4f}, same-batch gain vs random {gain:+.4f}")
    return row


if __name__ == "__main__":
    main()
