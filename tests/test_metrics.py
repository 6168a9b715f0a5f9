"""rlmix.metrics: hand-computed accuracy, NLL, ECE, FGSM, CAM boxes and localisation."""

import math

import pytest
import torch
from torch import nn

from rlmix.metrics import (
    box_iou,
    cam,
    cam_boxes,
    cam_localization,
    evaluate,
    expected_calibration_error,
    fgsm_attack,
    fgsm_error,
    nll,
    topk_accuracy,
)
from rlmix.models.base import Classifier

# -- tiny models -----------------------------------------------------------------------------------


class Linear(Classifier):
    """Identity body: features = normalised x, so logits = W mean_hw(x) + b and CAMs are known."""

    def __init__(self, weight, bias, mean=None, std=None):
        weight = torch.tensor(weight, dtype=torch.float32)
        super().__init__(weight.shape[0], weight.shape[1], mean, std, in_chans=weight.shape[1])
        with torch.no_grad():
            self.fc.weight.copy_(weight)
            self.fc.bias.copy_(torch.tensor(bias, dtype=torch.float32))


class TinyConv(Classifier):
    """Conv + BN + ReLU body (BN makes train/eval mode matter)."""

    def __init__(self, num_classes=3, in_chans=3, width=4):
        mean, std = [0.5] * in_chans, [0.25] * in_chans
        super().__init__(num_classes, width, mean=mean, std=std, in_chans=in_chans)
        self.body = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()
        )


class ModeRecorder(Linear):
    """Records self.training at every forward."""

    def forward(self, x):
        self.seen.append(self.training)
        return super().forward(x)


def const_images(values, size=2):
    """(B, C, size, size) images whose channel c is the constant values[b][c]."""
    v = torch.tensor(values, dtype=torch.float32)
    return v[:, :, None, None].expand(-1, -1, size, size).contiguous()


# -- top-k and NLL ---------------------------------------------------------------------------------


def test_topk_accuracy_hand_made():
    logits = torch.tensor([[4.0, 3, 2, 1], [1.0, 4, 3, 2], [1.0, 2, 3, 4]])
    labels = torch.tensor([0, 2, 0])
    # ranks of the labels: 1st, 2nd, 4th; top5 is capped at the 4 classes.
    acc = topk_accuracy(logits, labels, ks=(1, 2, 5))
    assert acc == pytest.approx({"top1": 1 / 3, "top2": 2 / 3, "top5": 1.0})
    assert set(topk_accuracy(logits, labels)) == {"top1", "top5"}


def test_nll_hand_made():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]], dtype=torch.float64)
    # -log(1/2) and -log(1/(3+1)), mean = 1.5 log 2.
    assert nll(logits, torch.tensor([0, 1])) == pytest.approx(1.5 * math.log(2), abs=1e-12)


def test_classification_validation():
    logits = torch.zeros(3, 4)
    with pytest.raises(ValueError, match=r"logits must have shape \(M, N\)"):
        nll(torch.zeros(3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"):
        nll(logits, torch.zeros(2, dtype=torch.long))
    with pytest.raises(TypeError, match="labels must be integer class indices"):
        nll(logits, torch.zeros(3))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        nll(logits, torch.tensor([0, 1, 4]))
    with pytest.raises(TypeError, match="logits must be a floating-point tensor"):
        topk_accuracy(torch.zeros(3, 4, dtype=torch.long), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="ks must be a non-empty sequence of positive integers"):
        topk_accuracy(logits, torch.zeros(3, dtype=torch.long), ks=(0,))


# -- ECE -------------------------------------------------------------------------------------------


def test_ece_hand_computed_four_bins():
    probs = torch.tensor(
        [
            [0.90, 0.10, 0.00, 0.00],  # conf 0.90 correct -> bin 3 (0.75, 1]
            [0.80, 0.20, 0.00, 0.00],  # conf 0.80 wrong   -> bin 3
            [0.40, 0.60, 0.00, 0.00],  # conf 0.60 correct -> bin 2 (0.5, 0.75]
            [0.30, 0.70, 0.00, 0.00],  # conf 0.70 wrong   -> bin 2
            [0.55, 0.45, 0.00, 0.00],  # conf 0.55 correct -> bin 2
            [0.30, 0.30, 0.40, 0.00],  # conf 0.40 correct -> bin 1 (0.25, 0.5]
        ]
    )
    labels = torch.tensor([0, 1, 1, 0, 0, 2])
    # bin 3: |1 - 1.70| = 0.70; bin 2: |2 - 1.85| = 0.15; bin 1: |1 - 0.40| = 0.60
    # ECE = sum_b |B_b|/M |acc - conf| = (0.70 + 0.15 + 0.60) / 6
    ece = expected_calibration_error(probs, labels, n_bins=4)
    assert ece == pytest.approx(1.45 / 6, abs=1e-7)


def test_ece_hand_computed_default_fifteen_bins():
    probs = torch.tensor(
        [
            [0.95, 0.03, 0.01, 0.01],  # conf 0.95 (bin 14) correct
            [0.62, 0.28, 0.05, 0.05],  # conf 0.62 (bin 9: (0.6, 0.667]) wrong
            [0.18, 0.64, 0.09, 0.09],  # conf 0.64 (bin 9) correct
            [0.30, 0.25, 0.25, 0.20],  # conf 0.30 (bin 4: (0.267, 0.333]) wrong
        ]
    )
    labels = torch.tensor([0, 1, 1, 3])
    # bin 14: |1 - 0.95| = 0.05; bin 9: |1 - 1.26| = 0.26; bin 4: |0 - 0.30| = 0.30 -> 0.61 / 4
    assert expected_calibration_error(probs, labels) == pytest.approx(0.1525, abs=1e-7)


def test_ece_zero_when_perfectly_calibrated():
    # Four samples at confidence 0.75 with 3 correct, two at 0.5 with 1 correct, one at 1 correct.
    probs = torch.tensor([[0.75, 0.25]] * 4 + [[0.5, 0.5]] * 2 + [[1.0, 0.0]])
    labels = torch.tensor([0, 0, 0, 1, 0, 1, 0])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error(probs, labels, n_bins=4) == pytest.approx(0.0, abs=1e-12)


def test_ece_bin_edge_goes_to_lower_bin():
    probs = torch.tensor([[0.5, 0.5], [0.625, 0.375]])
    labels = torch.tensor([0, 1])  # conf 0.5 correct (argmax tie -> class 0), conf 0.625 wrong
    # Edge 0.5 in the lower bin (0.25, 0.5]: |1 - 0.5| + |0 - 0.625| = 1.125 -> ECE 0.5625.
    # (Were it in (0.5, 0.75] with the other sample: |1 - 1.125| / 2 = 0.0625.)
    assert expected_calibration_error(probs, labels, n_bins=4) == pytest.approx(0.5625)
    # One bin: |acc - mean conf| = |0.5 - 0.5625|.
    assert expected_calibration_error(probs, labels, n_bins=1) == pytest.approx(0.0625)


def test_ece_validation():
    labels = torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"probs must hold probabilities in \[0, 1\]"):
        expected_calibration_error(torch.tensor([[1.2, -0.2], [0.5, 0.5]]), labels)
    with pytest.raises(ValueError, match=r"probs must hold probabilities in \[0, 1\]"):
        expected_calibration_error(torch.tensor([[math.nan, 0.5], [0.5, 0.5]]), labels)
    with pytest.raises(ValueError, match="n_bins must be an integer >= 1"):
        expected_calibration_error(torch.full((2, 2), 0.5), labels, n_bins=0)
    with pytest.raises(ValueError, match=r"probs must have shape \(M, N\)"):
        expected_calibration_error(torch.full((2, 2, 1), 0.5), labels)
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        expected_calibration_error(torch.full((2, 2), 0.5), labels[:1])


# -- FGSM ------------------------------------------------------------------------------------------

# logit0 = 0, logit1 = x0 - x1 + 0.5 =: d; prediction 1 iff d > 0. The CE gradient w.r.t. x is
# p1 * (w1 - w0) for y = 0, so sign = (+, -) per channel (d rises by 2 eps); for y = 1 it is
# (-, +) (d falls by 2 eps) unless the clamp to [0, 1] stops a channel.
FGSM_W, FGSM_B = [[0.0, 0.0], [1.0, -1.0]], [0.0, 0.5]
FGSM_X = [[0.2, 0.8], [0.1, 0.9], [0.5, 0.9], [0.0, 0.35], [0.9, 0.1], [0.9, 0.1]]
FGSM_Y = [0, 0, 1, 1, 1, 0]
# clean d: -0.1 ok, -0.3 ok, 0.1 ok, 0.15 ok, 1.3 ok, 1.3 wrong
# adv d (eps 0.1): 0.1 flip, -0.1 ok, -0.1 flip, 0.05 ok (clamped x0 = 0; unclamped -0.05), 1.1 ok,
# 1.5 wrong -> 3 errors.


def fgsm_case():
    return Linear(FGSM_W, FGSM_B), const_images(FGSM_X), torch.tensor(FGSM_Y)


def test_fgsm_attack_direction_and_clamp():
    model, x, y = fgsm_case()
    x_adv = fgsm_attack(model, x, y, eps=0.1)
    expected = [[0.3, 0.7], [0.2, 0.8], [0.4, 1.0], [0.0, 0.45], [0.8, 0.2], [1.0, 0.0]]
    assert torch.allclose(x_adv, const_images(expected), atol=1e-6)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not x_adv.requires_grad


def test_fgsm_error_counts_flips():
    model, x, y = fgsm_case()
    assert fgsm_error(model, x, y, eps=0.1) == 3
    assert fgsm_error(model, x, y, eps=0.0) == 1  # only the clean error
    # At the default eps = 8/255, d moves by 2 eps = 0.063 < every clean margin: no flips.
    assert fgsm_error(model, x, y, eps=8 / 255) == 1


def test_fgsm_leaves_parameter_grads_and_mode_untouched():
    model, x, y = fgsm_case()
    model.fc.bias.grad = torch.ones(2)
    model.train()
    fgsm_error(model, x, y)
    assert model.fc.weight.grad is None
    assert torch.equal(model.fc.bias.grad, torch.ones(2))
    assert model.training


def test_fgsm_runs_in_eval_mode():
    model = ModeRecorder(FGSM_W, FGSM_B)
    model.seen = []
    model.train()
    fgsm_error(model, const_images(FGSM_X), torch.tensor(FGSM_Y))
    assert model.seen == [False, False] and model.training


def test_fgsm_validation():
    model, x, y = fgsm_case()
    with pytest.raises(ValueError, match=r"x must hold pixel images in \[0, 1\]"):
        fgsm_error(model, x * 2, y)
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        fgsm_error(model, x, y, eps=-0.1)
    with pytest.raises(ValueError, match=r"y must be class indices of shape \(6,\)"):
        fgsm_error(model, x, y[:3])
    with pytest.raises(ValueError, match=r"x must be a float tensor of shape \(B, C, H, W\)"):
        fgsm_error(model, x[0], y)


# -- boxes and CAMs --------------------------------------------------------------------------------


def test_box_iou_hand_cases():
    a = torch.tensor([[0, 0, 4, 4], [0, 0, 4, 4], [0, 0, 2, 2], [0, 0, 4, 4], [1, 1, 1, 3]])
    b = torch.tensor([[2, 2, 6, 6], [0, 0, 4, 4], [2, 0, 4, 2], [1, 1, 3, 3], [1, 1, 1, 3]])
    # 2x2 / (16 + 16 - 4); identical; touching edges share no pixel (x2 exclusive); 4 / 16;
    # zero-area boxes -> 0.
    expected = torch.tensor([4 / 28, 1.0, 0.0, 0.25, 0.0])
    assert torch.allclose(box_iou(a, b), expected)
    with pytest.raises(ValueError, match=r"a and b must both have shape \(B, 4\)"):
        box_iou(a, b[:, :3])


def test_cam_boxes_hand_made():
    cams = torch.zeros(4, 6, 8)
    cams[0, 1, 2], cams[0, 3, 5], cams[0, 4, 1] = 1.0, 0.2, 0.1
    cams[1] = 3.0  # constant map -> whole image
    cams[2] = -1.0
    cams[2, 5, 7] = 2.0  # single corner pixel
    cams[3, 0:4, 0:4] = 1.0  # pixels 0..3 -> (0, 0, 4, 4): x2/y2 exclusive
    boxes = cam_boxes(cams)
    # image 0: kept (row 1, col 2) and (row 3, col 5) >= 0.15; (row 4, col 1) at 0.1 is not.
    expected = torch.tensor([[2, 1, 6, 4], [0, 0, 8, 6], [7, 5, 8, 6], [0, 0, 4, 4]]).float()
    assert torch.equal(boxes, expected)
    assert torch.equal(cam_boxes(cams[:1], threshold=0.05), torch.tensor([[1.0, 1, 6, 5]]))
    # min-max normalisation: invariant to shift and positive scale.
    assert torch.equal(cam_boxes(cams * 5 + 10), expected)


def test_cam_boxes_validation():
    with pytest.raises(ValueError, match=r"cams must be a float tensor of shape \(B, H, W\)"):
        cam_boxes(torch.zeros(6, 8))
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\]"):
        cam_boxes(torch.zeros(1, 6, 8), threshold=1.5)
    with pytest.raises(ValueError, match="cams must be finite"):
        cam_boxes(torch.full((1, 2, 2), math.nan))


def test_cam_matches_the_linear_head():
    torch.manual_seed(0)
    weight = [[1.0, -2.0], [0.5, 3.0], [-1.0, 0.0]]
    model = Linear(weight, [0.1, 0.2, 0.3], mean=[0.5, 0.25], std=[0.5, 2.0])
    x = torch.rand(3, 2, 5, 5)
    z = (x - torch.tensor([0.5, 0.25]).view(1, 2, 1, 1)) / torch.tensor([0.5, 2.0]).view(1, 2, 1, 1)
    classes = torch.tensor([0, 1, 2])
    w = torch.tensor(weight)[classes]
    expected = w[:, 0, None, None] * z[:, 0] + w[:, 1, None, None] * z[:, 1]
    maps = cam(model, x, classes)
    assert maps.shape == (3, 5, 5)
    assert torch.allclose(maps, expected, atol=1e-6)
    # CAM mean + bias = logit (global average pooling commutes with the linear head).
    logits = model(x)
    assert torch.allclose(
        maps.mean(dim=(1, 2)) + model.fc.bias[classes], logits[[0, 1, 2], classes]
    )
    assert torch.allclose(cam(model, x, 1), (w[1, 0] * z[:, 0] + w[1, 1] * z[:, 1]), atol=1e-6)


def test_cam_upsamples_bilinearly():
    model = Linear([[1.0], [-1.0]], [0.0, 0.0])
    model.body = nn.AvgPool2d(2)  # 4x4 input -> 2x2 features
    x = torch.tensor([[0.0, 0, 1, 1]] * 4).view(1, 1, 4, 4)  # features [[0, 1], [0, 1]]
    # align_corners=False: output column j samples (j + 0.5) / 2 - 0.5, clamped -> 0, .25, .75, 1
    expected = torch.tensor([0.0, 0.25, 0.75, 1.0]).expand(4, 4)
    assert torch.allclose(cam(model, x, 0)[0], expected)
    assert torch.allclose(cam(model, x, torch.tensor([1]))[0], -expected)
    with pytest.raises(ValueError, match=r"class_idx must lie in \[0, 2\)"):
        cam(model, x, 2)
    with pytest.raises(TypeError, match="model must provide forward_features"):
        cam(nn.Conv2d(1, 1, 1), x, 0)


def loc_case():
    """Class 0's CAM is the image, class 1's its negative; logit1 - logit0 = 0.3 - 2 mean(x)."""
    model = Linear([[1.0], [-1.0]], [0.0, 0.3])
    x = torch.zeros(4, 1, 8, 8)
    x[0, :, 2:6, 1:5] = 1.0  # box (1, 2, 5, 6); mean 0.25 -> predicted 0
    x[1, :, 2:6, 1:5] = 1.0
    x[2, :, 2:6, 1:5] = 1.0
    x[3, :, 2:6, 1:5] = 0.5  # same CAM box, mean 0.125 -> predicted 1 (wrong)
    y = torch.tensor([0, 1, 0, 0])
    boxes = torch.tensor([[1, 2, 5, 6], [1, 2, 5, 6], [5, 0, 8, 3], [1, 2, 5, 5]]).float()
    # IoU: 1 (hit); class 1's CAM box is the whole image: 16/64 (miss); disjoint (miss);
    # 12 / 16 = 0.75 (hit under GT-known only, as the prediction is wrong).
    return model, x, y, boxes


def test_cam_localization_counts():
    model, x, y, boxes = loc_case()
    assert cam_localization(model, x, y, boxes) == 2
    assert cam_localization(model, x, y, boxes, require_correct=True) == 1
    assert cam_localization(model, x, y, boxes, iou_threshold=0.75) == 2  # IoU >= threshold
    assert cam_localization(model, x, y, boxes, iou_threshold=0.76) == 1
    with pytest.raises(ValueError, match=r"boxes must have shape \(4, 4\)"):
        cam_localization(model, x, y, boxes[:2])
    with pytest.raises(ValueError, match=r"iou_threshold must be in \[0, 1\]"):
        cam_localization(model, x, y, boxes, iou_threshold=2.0)


# -- evaluate --------------------------------------------------------------------------------------


def make_batches(n_batches=3, batch=5, size=6, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        x = torch.rand(batch, 3, size, size, generator=g)
        y = torch.randint(0, classes, (batch,), generator=g)
        xy1 = torch.randint(0, 2, (batch, 2), generator=g)
        xy2 = (xy1 + torch.randint(3, 6, (batch, 2), generator=g)).clamp(max=size)
        out.append((x, y, torch.cat([xy1, xy2], dim=1).float()))
    return out


def test_evaluate_matches_direct_computation():
    torch.manual_seed(0)
    model = TinyConv()
    model.train()
    batches = make_batches()
    x, y, boxes = (torch.cat(t) for t in zip(*batches, strict=True))
    result = evaluate(model, batches, eps=0.05, progress=True, desc="test")
    assert model.training and all(m.training for m in model.modules())

    model.eval()
    with torch.no_grad():
        logits = model(x).double()
    acc = topk_accuracy(logits, y)
    expected = {
        "top1": acc["top1"],
        "top5": acc["top5"],
        "nll": nll(logits, y),
        "ece": expected_calibration_error(logits.softmax(1), y),
        "fgsm_error": fgsm_error(model, x, y, eps=0.05) / 15,
        "loc_acc": cam_localization(model, x, y, boxes) / 15,
    }
    assert list(result) == list(expected)
    assert all(type(v) is float for v in result.values())
    assert result == pytest.approx(expected, abs=1e-6)
    assert result["top5"] == 1.0  # 3 classes
    assert 0 < result["loc_acc"] < 1 and 0 < result["fgsm_error"] < 1


def test_evaluate_optional_keys_and_modes():
    torch.manual_seed(0)
    model = TinyConv()
    model.body[1].eval()  # a frozen BN stays frozen after evaluate
    batches = make_batches(n_batches=2)
    pairs = [(x, y) for x, y, _ in batches]
    assert set(evaluate(model, pairs)) == {"top1", "top5", "nll", "ece", "fgsm_error"}
    assert set(evaluate(model, batches, fgsm=False, localization=False)) == {
        "top1",
        "top5",
        "nll",
        "ece",
    }
    assert model.training and not model.body[1].training
    recorder = ModeRecorder([[1.0, 0, 0], [0, 1, 0]], [0.0, 0.0])
    recorder.seen = []
    evaluate(recorder, [(x, y % 2) for x, y in pairs], fgsm=False)
    assert recorder.seen == [False, False] and recorder.training


def test_evaluate_validation():
    model = TinyConv()
    batches = make_batches(n_batches=2)
    with pytest.raises(ValueError, match="loader yielded no batches"):
        evaluate(model, [])
    with pytest.raises(TypeError, match=r"loader must yield \(x, y\) or \(x, y, boxes\) tuples"):
        evaluate(model, [batches[0][0]])
    mixed = [batches[0], batches[1][:2]]
    with pytest.raises(ValueError, match="loader yielded boxes for some batches only"):
        evaluate(model, mixed, fgsm=False)
    with pytest.raises(ValueError, match=r"x must hold pixel images in \[0, 1\]"):
        evaluate(model, [(batches[0][0] - 0.5, batches[0][1])])


def test_evaluate_with_real_loader_and_model():
    data = pytest.importorskip("rlmix.data")
    models = pytest.importorskip("rlmix.models")
    if not hasattr(data, "BatchLoader") or "resnet_tiny" not in models.list_models():
        pytest.skip("rlmix.data.BatchLoader or resnet_tiny not available yet")
    g = torch.Generator().manual_seed(0)
    n = 20
    xy1 = torch.randint(0, 16, (n, 2), generator=g)
    images = data.ImageTensors(
        images=torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
        labels=torch.randint(0, 4, (n,), generator=g),
        boxes=torch.cat([xy1, xy1 + 16], dim=1).float(),
    )
    loader = data.BatchLoader(
        images, 8, shuffle=False, drop_last=False, augment=False, with_boxes=True
    )
    result = evaluate(models.create_model("resnet_tiny", 4), loader)
    assert set(result) == {"top1", "top5", "nll", "ece", "fgsm_error", "loc_acc"}
    assert all(0 <= result[k] <= 1 for k in ("top1", "top5", "ece", "fgsm_error", "loc_acc"))
