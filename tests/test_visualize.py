import pytest
import torch

from rlmix.models import create_model
from rlmix.visualize import main, render


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
