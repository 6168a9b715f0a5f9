"""In-memory batch loader whose order and augmentation are a pure function of (seed, epoch).

There is no hidden RNG state: batch ``i`` of epoch ``e`` is the same whenever it is produced, so
resuming a run mid-way reproduces the batches exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from rlmix.data.base import ImageTensors
from rlmix.seeding import stream_seed


def crop_flip(x: torch.Tensor, offsets: torch.Tensor, flip: torch.Tensor, pad: int) -> torch.Tensor:
    """Zero-pad by ``pad`` pixels, crop back to (H, W) at ``offsets``, then mirror where ``flip``.

    Args:
        x: images (B, C, H, W), any dtype.
        offsets: (B, 2) long ``(dy, dx)`` in [0, 2 * pad]: top-left corner in the padded image
            (``(pad, pad)`` is the identity crop).
        flip: (B,) bool, horizontal flip after the crop.

    Returns:
        (B, C, H, W) tensor of ``x``'s dtype, one gather (no loop over the batch).
    """
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = offsets[:, 0, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = offsets[:, 1, None] + torch.arange(w, device=x.device)  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    return padded[
        torch.arange(b, device=x.device)[:, None, None, None],
        torch.arange(c, device=x.device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


class BatchLoader:
    """Iterate over an :class:`ImageTensors` split in batches.

    Args:
        data: the split (uint8 images).
        batch_size: images per batch B.
        shuffle: random order per epoch (else the stored order).
        drop_last: drop the final incomplete batch.
        augment: random crop with zero padding ``pad`` and horizontal flip (p = 0.5).
        seed: base seed; order and augmentation depend only on ``(seed, epoch, batch index)``.
            A plain attribute: it may be changed between epochs.
        device: where the batches are put.
        with_boxes: also yield the (B, 4) boxes (evaluation only: incompatible with ``augment``).
        pad: crop padding in pixels.
        rank: this process's rank r (``torchrun``); each global batch is split across ranks.
        world_size: number of ranks W; ``batch_size`` stays the global batch.

    Each global batch of ``batch_size`` images is split so that rank r gets its positions
    r, r + W, r + 2W, ...: the partition ``torch.utils.data.DistributedSampler(drop_last=True,
    shuffle=False)`` makes of the epoch order. Augmentation is drawn for the whole global batch
    before the split, so the union of the W shards is exactly the one-process batch.

    Yields:
        ``(x, y)``: x float32 (B, C, H, W) in [0, 1] on ``device``, y int64 (B,); with
        ``with_boxes`` ``(x, y, boxes)``, boxes float (B, 4) xyxy in pixels.
    """

    def __init__(
        self,
        data: ImageTensors,
        batch_size: int,
        *,
        shuffle: bool,
        drop_last: bool,
        augment: bool,
        seed: int = 0,
        device: str | torch.device = "cpu",
        with_boxes: bool = False,
        pad: int = 4,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not isinstance(data, ImageTensors):
            raise TypeError(f"data must be an ImageTensors split, got {type(data).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if len(data) == 0:
            raise ValueError("data is empty: the split holds no images")
        if drop_last and batch_size > len(data):
            raise ValueError(
                f"batch_size ({batch_size}) is larger than the split ({len(data)} images): "
                "with drop_last=True there would be no batch"
            )
        if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
            raise ValueError(f"pad must be a non-negative integer, got {pad!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if drop_last and batch_size % world_size:
            raise ValueError(
                f"batch_size ({batch_size}) must be divisible by the number of ranks ({world_size})"
            )
        if with_boxes and data.boxes is None:
            raise ValueError("with_boxes=True but the split has no boxes")
        if with_boxes and augment:
            raise ValueError(
                "with_boxes=True cannot be combined with augment=True (boxes are for evaluation)"
            )
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.augment = augment
        self.seed = seed
        self.device = torch.device(device)
        self.with_boxes = with_boxes
        self.pad = pad
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration produces."""
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def order(self) -> torch.Tensor:
        """Indices (N,) of this epoch's sample order."""
        n = len(self.data)
        if not self.shuffle:
            return torch.arange(n)
        g = torch.Generator().manual_seed(stream_seed(self.seed, "order", self.epoch))
        return torch.randperm(n, generator=g)

    def _augment(self, x: torch.Tensor, index: int, n_global: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(stream_seed(self.seed, "augment", self.epoch, index))
        offsets = torch.randint(0, 2 * self.pad + 1, (n_global, 2), generator=g)
        flip = torch.rand(n_global, generator=g) < 0.5
        shard = slice(self.rank, None, self.world_size)
        return crop_flip(x, offsets[shard].to(x.device), flip[shard].to(x.device), self.pad)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        order = self.order()
        for i in range(len(self)):
            global_idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            idx = global_idx[self.rank :: self.world_size]
            if len(idx) == 0:
                continue
            x = self.data.images[idx].to(self.device)
            if self.augment:
                x = self._augment(x, i, len(global_idx))
            x = x.float().div_(255.0)
            y = self.data.labels[idx].to(self.device)
            if self.with_boxes:
                yield x, y, self.data.boxes[idx].to(self.device)
            else:
                yield x, y
