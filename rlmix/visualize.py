"""Figure-2-style picture of R-Mix: pairs, saliency, top/least masks, m_inter and the mix.

    python -m rlmix.visualize                           # fresh model on the embedded dataset
    python -m rlmix.visualize --checkpoint runs/default/checkpoint.pt --pairs 6 --grid 4

Each row is one pair (x_i, x_j = x_perm[i]): both images, their saliency maps, their top-k masks
(white = most salient region), m_inter (white = mixed linearly), and the mixed image with its
label weights. A trained classifier (``--checkpoint``) gives sharper saliency than a fresh one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from rlmix.checkpoints import load_checkpoint  # noqa: E402
from rlmix.cli import ArgumentParser, add_config_args, overrides_from_args, run_main  # noqa: E402
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
    p.add_argument("--pairs", type=int, default=4, help="number of pairs (rows), default 4")
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
    p.add_argument("--output", default=None, help="PNG path (default OUT/rmix_pairs.png)")
    return p


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
            x[i].permute(1, 2, 0),
            x[j].permute(1, 2, 0),
            saliency[i],
            saliency[j],
            masks[i].float(),
            masks[j].float(),
            m_inter[i].float(),
            x_mix[i].permute(1, 2, 0),
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
        top = torch.topk(y_mix[i], 2)
        axes[r][-1].set_xlabel(
            " + ".join(
                f"{w:.2f} {class_names[int(k)]}"
                for w, k in zip(top.values.tolist(), top.indices.tolist(), strict=True)
            ),
            fontsize=7,
        )
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
    batch = next(iter(trainer.test_loader))
    x, labels = batch[0][: 2 * args.pairs].cpu(), batch[1][: 2 * args.pairs].cpu()
    path = Path(args.output or Path(cfg.out) / "rmix_pairs.png")
    try:
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
