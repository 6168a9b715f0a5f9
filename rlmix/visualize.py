"""Figure-2-style picture of R-Mix: pairs, saliency, top/least masks, m_inter and the mix.

    python -m rlmix.visualize                           # fresh model on the embedded dataset
    python -m rlmix.visualize --checkpoint runs/default/checkpoint.pt --pairs 6 --grid 4
    python -m rlmix.visualize --config fashion_mnist_study --checkpoint runs/study/.../checkpoint.pt

Each row is one pair (x_i, x_j = x_perm[i]) of test images of two different classes, drawn at
random (``--seed``): both images, their saliency maps, their top-k masks (white = most salient
region), m_inter (white = mixed linearly), and the mixed image captioned with its label weights
on both images' classes. A trained classifier (``--checkpoint``) gives sharper saliency than a
fresh one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from rlmix.checkpoints import load_checkpoint  # noqa: E402
from rlmix.cli import (  # noqa: E402
    ArgumentParser,
    add_config_args,
    overrides_from_args,
    positive_int,
    run_main,
)
from rlmix.config import load_config  # noqa: E402
from rlmix.errors import ConfigError  # noqa: E402
from rlmix.mixing import one_hot, rmix, topk_masks  # noqa: E402
from rlmix.plots import save_figure  # noqa: E402
from rlmix.saliency import input_saliency, pool_saliency  # noqa: E402
from rlmix.trainer import Trainer  # noqa: E402


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m rlmix.visualize",
        description="Save a PNG that shows how R-Mix mixes pairs of images.",
    )
    add_config_args(p)
    p.add_argument("--checkpoint", help="classifier checkpoint (checkpoint.pt of a run)")
    p.add_argument(
        "--pairs", type=positive_int, default=4, help="number of pairs (rows), default 4"
    )
    p.add_argument("--grid", type=int, default=4, help="mixing grid g, default 4")
    p.add_argument(
        "--q",
        type=float,
        nargs=2,
        default=(0.5, 0.5),
        metavar=("Q_I", "Q_J"),
        help="top-k of the two images of each pair, default 0.5 0.5",
    )
    p.add_argument("--lam", type=float, default=0.5, help="mixing coefficient, default 0.5")
    p.add_argument("--pair-seed", type=int, default=0, help="seed of the random pairs, default 0")
    p.add_argument("--output", default=None, help="PNG path (default OUT/rmix_pairs.png)")
    return p


def draw_pairs(labels: torch.Tensor, pairs: int, seed: int) -> torch.Tensor:
    """Indices (2 * pairs,) of random image pairs whose two images have different classes."""
    if labels.unique().numel() < 2:
        raise ValueError("the split has one class only: no pair of different classes")
    g = torch.Generator().manual_seed(seed)
    chosen: list[int] = []
    while len(chosen) < 2 * pairs:
        i, j = torch.randint(labels.shape[0], (2,), generator=g).tolist()
        if labels[i] != labels[j]:
            chosen += [i, j]
    return torch.tensor(chosen)


def pair_captions(y_mix: torch.Tensor, labels: torch.Tensor, class_names: list[str]) -> list[str]:
    """For each pair (2r, 2r+1): the mixed image 2r's label weights on both images' classes."""
    out = []
    for i in range(0, labels.shape[0] - 1, 2):
        ci, cj = int(labels[i]), int(labels[i + 1])
        out.append(
            f"{float(y_mix[i, ci]):.2f} {class_names[ci]} + {float(y_mix[i, cj]):.2f} "
            f"{class_names[cj]}"
        )
    return out


def _image(t: torch.Tensor) -> torch.Tensor:
    """(C, H, W) -> what imshow takes: (H, W) for one channel, else (H, W, C)."""
    return t[0] if t.shape[0] == 1 else t.permute(1, 2, 0)


def render(model, x, labels, class_names, *, grid, q, lam, path) -> Path:
    """Draw the figure for the pairs (x[2r], x[2r+1]) and write it to ``path``."""
    n = x.shape[0] // 2
    x = x[: 2 * n]
    labels = labels[: 2 * n]
    perm = torch.arange(2 * n).view(n, 2).flip(1).reshape(-1)  # pair 2r <-> 2r+1
    saliency, _ = input_saliency(model, x, labels, mode="eval")
    pooled = pool_saliency(saliency, grid)
    qs = torch.tensor(q, dtype=x.dtype).repeat(n)
    y = one_hot(labels, len(class_names), dtype=x.dtype)
    x_mix, y_mix = rmix(x, y, pooled, qs, lam, perm)
    masks = topk_masks(pooled, qs, x.shape[-1])
    m_inter = masks == masks[perm]
    captions = pair_captions(y_mix, labels, class_names)
    cols = [
        "x_i",
        "x_j",
        "saliency i",
        "saliency j",
        "top mask i",
        "top mask j",
        "m_inter",
        "mixed",
    ]
    fig, axes = plt.subplots(n, len(cols), figsize=(1.7 * len(cols), 1.9 * n), squeeze=False)
    for r in range(n):
        i, j = 2 * r, 2 * r + 1
        panels = [
            _image(x[i]),
            _image(x[j]),
            saliency[i],
            saliency[j],
            masks[i].float(),
            masks[j].float(),
            m_inter[i].float(),
            _image(x_mix[i]),
        ]
        for c, (ax, img) in enumerate(zip(axes[r], panels, strict=True)):
            cmap = None if img.dim() == 3 else ("inferno" if c in (2, 3) else "gray")
            ax.imshow(
                img.detach().clamp(0, 1 if c not in (2, 3) else float(img.max())).numpy(),
                cmap=cmap,
                vmin=0 if cmap == "gray" else None,
                vmax=1 if cmap == "gray" else None,
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c], fontsize=9)
        axes[r][0].set_ylabel(class_names[int(labels[i])], fontsize=8)
        axes[r][1].set_ylabel(class_names[int(labels[j])], fontsize=8)
        axes[r][-1].set_xlabel(captions[r], fontsize=7)
    fig.suptitle(
        f"R-Mix: grid {grid}, top-k q=({q[0]:.2f}, {q[1]:.2f}), lam={lam:.2f}", fontsize=10
    )
    return save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = load_config(args.config, overrides_from_args(args))
    trainer = Trainer(cfg)
    if args.checkpoint:
        state = load_checkpoint(args.checkpoint)
        trainer.load_state_dict(state["env"]["trainer"])
    model = trainer.model.cpu()
    test = trainer.test_loader.data
    path = Path(args.output or Path(cfg.out) / "rmix_pairs.png")
    try:
        index = draw_pairs(test.labels, args.pairs, args.pair_seed)
        x, labels = test.images[index].float() / 255.0, test.labels[index]
        render(
            model,
            x,
            labels,
            trainer.info.class_names,
            grid=args.grid,
            q=tuple(args.q),
            lam=args.lam,
            path=path,
        )
    except ValueError as e:
        raise ConfigError(f"visualize: {e}") from e
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
