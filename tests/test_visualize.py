import pytest
import torch

from rlmix.mixing import one_hot
from rlmix.models import create_model
from rlmix.visualize import draw_pairs, main, pair_captions, render


def test_render_writes_png_with_expected_panels(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet_tiny", 3)
    x = torch.rand(4, 3, 32, 32)
    path = render(
        model,
        x,
        torch.tensor([0, 1, 2, 0]),
        ["a", "b", "c"],
        grid=4,
        q=(0.5, 0.0),
        lam=0.5,
        path=tmp_path / "fig.png",
    )
    from PIL import Image

    w, h = Image.open(path).size
    assert w > 2 * h  # 8 panels per row, 2 rows


def test_cli(tiny_cli_args, tmp_path, capsys):
    out = tmp_path / "vis.png"
    args = [*tiny_cli_args, "--pairs", "2", "--output", str(out)]
    assert main(args) == 0
    assert out.stat().st_size > 5000
    assert "saved" in capsys.readouterr().out


def test_cli_rejects_bad_grid(tiny_config):
    from rlmix.cli import run_main

    with pytest.raises(ValueError, match=r"grid 3 does not divide"):
        render(
            create_model("resnet_tiny", 2),
            torch.rand(2, 3, 32, 32),
            torch.tensor([0, 1]),
            ["a", "b"],
            grid=3,
            q=(0.5, 0.5),
            lam=0.5,
            path="unused.png",
        )
    assert run_main(main, ["--bogus"]) == 2


def test_pairs_are_random_and_of_different_classes():
    labels = torch.arange(10).repeat_interleave(20)  # sorted by class, as ImageFolder splits are
    index = draw_pairs(labels, 6, seed=1)
    pairs = labels[index].view(6, 2)
    assert (pairs[:, 0] != pairs[:, 1]).all()
    assert pairs.unique().numel() > 3  # not all from the first class
    assert torch.equal(index, draw_pairs(labels, 6, seed=1))
    assert not torch.equal(index, draw_pairs(labels, 6, seed=2))
    with pytest.raises(ValueError, match="one class only"):
        draw_pairs(torch.zeros(5, dtype=torch.long), 1, seed=0)


def test_captions_give_both_classes_their_weights():
    labels = torch.tensor([2, 0])
    y = one_hot(labels, 3)
    y_mix = 0.7 * y + 0.3 * y[[1, 0]]
    assert pair_captions(y_mix, labels, ["cat", "dog", "owl"]) == ["0.70 owl + 0.30 cat"]


def test_render_grey_images(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet_tiny", 2, in_chans=1)
    path = render(
        model, torch.rand(2, 1, 32, 32), torch.tensor([0, 1]), ["a", "b"],
        grid=4, q=(0.5, 0.5), lam=0.5, path=tmp_path / "grey.png",
    )  # fmt: skip
    assert path.stat().st_size > 1000
