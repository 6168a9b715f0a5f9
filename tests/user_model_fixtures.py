"""``module:function`` model constructors (``tests.user_model_fixtures:NAME``), good and broken.

Not a test module: pytest does not collect it. ``tests/test_user_models.py`` uses them, through
``create_model`` and through the commands (whose worker processes import this module by name).
"""

import torch
from torch import nn

NOT_CALLABLE = 3


class SmallNet(nn.Module):
    """A 3-channel conv stem, one strided conv, global average pooling and ``fc``, torchvision
    style: no ``get_classifier``, no ``in_chans``."""

    def __init__(self, num_classes: int, width: int = 8, in_chans: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


def small_cnn(num_classes: int, width: int = 8) -> SmallNet:
    """:class:`SmallNet` with a 3-channel stem whatever the data (1-channel data is repeated)."""
    return SmallNet(num_classes, width)


def small_cnn_in_chans(num_classes: int, in_chans: int) -> SmallNet:
    """:class:`SmallNet` for the data's channels: the constructor names ``in_chans``."""
    return SmallNet(num_classes, in_chans=in_chans)


def conv_head(num_classes: int) -> nn.Module:
    """Classifies with a 1x1 convolution: no ``nn.Linear`` anywhere."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, num_classes, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def mlp(num_classes: int) -> nn.Module:
    """A final ``nn.Linear`` on flattened 3x32x32 pixels: no feature map that it average-pools."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(3 * 32 * 32, 16), nn.ReLU(), nn.Linear(16, num_classes)
    )


def scaled_logits(num_classes: int) -> nn.Module:
    """The final ``nn.Linear``'s output is scaled afterwards: it is not the logits."""

    class Scaled(SmallNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2.0 * super().forward(x)

    return Scaled(num_classes)


def broken(num_classes: int) -> nn.Module:
    raise RuntimeError("no weights here")


def not_a_module(num_classes: int) -> dict:
    return {"num_classes": num_classes}


def wrong_classes(num_classes: int) -> SmallNet:
    return SmallNet(num_classes + 1)


def two_channel_stem(num_classes: int) -> SmallNet:
    return SmallNet(num_classes, in_chans=2)


def crashes(num_classes: int) -> nn.Module:
    """Builds, but its forward raises."""

    class Crash(SmallNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise ValueError("shapes do not line up")

    return Crash(num_classes)


class _Tiny(nn.Module):
    """Mean pixel per channel -> ``fc``: the smallest module with logits and weights."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


def aux_outputs(num_classes: int) -> nn.Module:
    """Logits in eval mode, a tuple with an auxiliary head's logits in train mode (as
    torchvision's GoogLeNet and Inception)."""

    class Aux(_Tiny):
        def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
            logits = super().forward(x)
            return (logits, logits.detach()) if self.training else logits

    return Aux(num_classes)


def no_grad_forward(num_classes: int) -> nn.Module:
    """Its forward runs under ``torch.no_grad``: it evaluates, but nothing trains."""

    class NoGrad(_Tiny):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return super().forward(x)

    return NoGrad(num_classes)


def no_parameters(num_classes: int) -> nn.Module:
    """Logits from the pixels alone: no weight to train."""

    class Fixed(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3))[:, :1].expand(-1, num_classes)

    return Fixed()


def one_batch_size(num_classes: int) -> nn.Module:
    """A forward that works only for batches of 2 (the eval probe's size)."""

    class Two(_Tiny):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.mean(dim=(2, 3)).reshape(2, 3))

    return Two(num_classes)
