"""digits-vit: the fixed split, preprocessing, the committed weights' accuracy, lazy torch import."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from edgeattn.models import digits

# Measured once on the fixed split (SPLIT_SEED=0, TEST_FRACTION=0.25, stratified) and the
# preprocessing of load_split(32). If any of these fail, the held-out set changed: every
# accuracy figure of digits-vit (and its committed weights) would be invalid.
N_TRAIN, N_TEST = 1347, 450
Y_TEST_SUM = 2016
Y_TRAIN_SUM = 6054
Y_TEST_COUNTS = [45, 46, 44, 46, 45, 46, 45, 45, 43, 45]
TEST_IDX_SHA256 = "c5f4eb8f9b9900ba192d0d6144e3b6ede4f6c7a6b5df902cca12b6e99504b0a7"
X_TEST_SHA256 = "85db8cf16ed083af31709d19deb02dc03c25cba8838f045e4c5594200d13bb0d"


@pytest.fixture(scope="module")
def split():
    return digits.load_split()


def test_split_constants():
    assert digits.SPLIT_SEED == 0
    assert digits.TEST_FRACTION == 0.25


def test_split_is_fixed(split):
    x_train, y_train, x_test, y_test = split
    again = digits.load_split()
    for a, b in zip(split, again):
        np.testing.assert_array_equal(a, b)
    assert len(x_train) == len(y_train) == N_TRAIN
    assert len(x_test) == len(y_test) == N_TEST
    assert int(y_test.sum()) == Y_TEST_SUM
    assert int(y_train.sum()) == Y_TRAIN_SUM
    assert np.bincount(y_test, minlength=10).tolist() == Y_TEST_COUNTS
    train_idx, test_idx = digits.split_indices()
    assert not set(train_idx.tolist()) & set(test_idx.tolist())
    assert len(train_idx) + len(test_idx) == 1797
    assert hashlib.sha256(test_idx.astype(np.int64).tobytes()).hexdigest() == TEST_IDX_SHA256
    assert hashlib.sha256(np.ascontiguousarray(x_test).tobytes()).hexdigest() == X_TEST_SHA256


def test_image_shape_dtype_range(split):
    x_train, y_train, x_test, y_test = split
    assert x_train.shape == (N_TRAIN, 3, 32, 32)
    assert x_test.shape == (N_TEST, 3, 32, 32)
    assert x_train.dtype == x_test.dtype == np.float32
    assert y_train.dtype == y_test.dtype == np.int64
    assert set(np.unique(y_test).tolist()) == set(range(10))
    for x in (x_train, x_test):
        assert x.min() >= -1.0 and x.max() <= 1.0
        assert x.min() == -1.0 and x.max() == 1.0
        np.testing.assert_array_equal(x[:, 0], x[:, 1])  # gray replicated
        np.testing.assert_array_equal(x[:, 0], x[:, 2])
    small = digits.load_split(image_size=16)[2]
    assert small.shape == (N_TEST, 3, 16, 16)


def test_preprocess_matches_torch_bilinear():
    torch = pytest.importorskip("torch")
    from sklearn.datasets import load_digits

    images = load_digits().images[:8]
    ours = digits.preprocess(images, 32)
    ref = torch.nn.functional.interpolate(torch.tensor(images, dtype=torch.float64)[:, None], size=(32, 32),
                                          mode="bilinear", align_corners=False)
    ref = ((ref / 16.0 - 0.5) / 0.5).float().numpy()
    np.testing.assert_allclose(ours[:, :1], ref, atol=1e-6)


def test_config():
    cfg = digits.CONFIG
    assert cfg["image_size"] == 32 and cfg["patch_size"] == 4 and cfg["num_channels"] == 3
    assert (cfg["image_size"] // cfg["patch_size"]) ** 2 + 1 == 65
    assert cfg["num_labels"] == 10
    assert cfg["hidden_size"] % cfg["num_attention_heads"] == 0


def test_weights_file_small():
    assert digits.WEIGHTS_PATH.is_file(), "run `python -m edgeattn.models.train_digits_vit`"
    assert digits.WEIGHTS_PATH.stat().st_size < 2_000_000


def test_build_model_reaches_95_percent():
    pytest.importorskip("torch")
    from transformers import ViTForImageClassification

    model = digits.build_model()
    assert isinstance(model, ViTForImageClassification)
    assert not model.training
    acc = digits.evaluate_top1(digits.torch_predict_fn(model))
    assert acc >= 0.95, f"digits-vit test accuracy {acc:.4f} < 0.95"


def test_evaluate_top1_counts_correctly(split):
    _, _, _, y_test = split

    def oracle(xb, _state={"i": 0}):
        n = len(xb)
        labels = y_test[_state["i"]:_state["i"] + n]
        _state["i"] += n
        return np.eye(10, dtype=np.float32)[labels]

    assert digits.evaluate_top1(oracle, batch_size=100) == 1.0
    assert digits.evaluate_top1(lambda xb: np.zeros((len(xb), 10), np.float32)) == pytest.approx(45 / 450)


def test_build_model_missing_weights(monkeypatch, tmp_path):
    pytest.importorskip("torch")
    monkeypatch.setattr(digits, "WEIGHTS_PATH", tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError, match="train_digits_vit"):
        digits.build_model()


def test_import_does_not_import_torch():
    code = ("import sys, edgeattn.models.digits as d; "
            "bad = [m for m in ('torch', 'transformers', 'safetensors') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


# --- digits-vit-hr: 384×384, patch 16, 576 tokens + CLS, fine-tuned from digits-vit --------------

HR_MAX_BYTES = 15_000_000


def test_config_hr():
    hr, base = digits.CONFIG_HR, digits.CONFIG
    assert hr["image_size"] == 384 and hr["patch_size"] == 16
    assert (hr["image_size"] // hr["patch_size"]) ** 2 == 576
    # the transformer blocks have the base model's shapes: only the embeddings differ
    assert {k: v for k, v in hr.items() if k not in ("image_size", "patch_size")} == \
        {k: v for k, v in base.items() if k not in ("image_size", "patch_size")}
    assert digits.get_config("base") is digits.CONFIG and digits.get_config("hr") is digits.CONFIG_HR
    with pytest.raises(ValueError, match="variant"):
        digits.get_config("xl")


def test_preprocess_separable_matches_preprocess():
    from sklearn.datasets import load_digits

    images = load_digits().images[:6]
    np.testing.assert_array_equal(digits.preprocess_separable(images, 32), digits.preprocess(images, 32))
    hr = digits.preprocess_separable(images, 384)
    assert hr.shape == (6, 3, 384, 384) and hr.dtype == np.float32 and hr.flags.c_contiguous
    np.testing.assert_allclose(hr, digits.preprocess(images, 384), rtol=0, atol=1e-6)
    # per-image results do not depend on the batch they are computed in (per-batch evaluation)
    np.testing.assert_array_equal(hr[2:3], digits.preprocess_separable(images[2:3], 384))
    np.testing.assert_array_equal(digits.preprocess_variant(images, "hr"), hr)
    np.testing.assert_array_equal(digits.preprocess_variant(images, "base"), digits.preprocess(images, 32))


def test_load_split_raw_matches_fixed_split(split):
    im_train, y_train, im_test, y_test = digits.load_split_raw()
    assert im_train.shape == (N_TRAIN, 8, 8) and im_test.shape == (N_TEST, 8, 8)
    np.testing.assert_array_equal(y_train, split[1])
    np.testing.assert_array_equal(y_test, split[3])
    np.testing.assert_array_equal(digits.preprocess(im_test, 32), split[2])
    with pytest.raises(ValueError, match="384"):
        digits.load_split(32, variant="hr")


def test_hr_weights_file_size():
    assert digits.WEIGHTS_PATH_HR.is_file(), "run `python -m edgeattn.models.train_digits_vit --variant hr`"
    assert digits.WEIGHTS_PATH_HR.stat().st_size <= HR_MAX_BYTES


@pytest.fixture(scope="module")
def hr_model():
    pytest.importorskip("torch")
    return digits.build_model(variant="hr")


def test_hr_weights_load_strictly(hr_model):
    from safetensors.torch import load_file
    from transformers import ViTForImageClassification

    assert isinstance(hr_model, ViTForImageClassification) and not hr_model.training
    state = load_file(str(digits.WEIGHTS_PATH_HR))
    model_state = hr_model.state_dict()
    assert set(state) == set(model_state)
    for k, v in state.items():
        assert v.dtype == model_state[k].dtype and v.shape == model_state[k].shape, k
    assert state["vit.embeddings.position_embeddings"].shape == (1, 577, 128)
    assert state["vit.embeddings.patch_embeddings.projection.weight"].shape == (128, 3, 16, 16)
    meta = digits.weights_metadata("hr")
    assert meta["model"] == "digits-vit-hr" and float(meta["test_top1"]) >= 0.95


def test_hr_first_64_test_images(hr_model):
    acc = digits.evaluate_top1(digits.torch_predict_fn(hr_model), variant="hr", limit=64)
    assert acc >= 0.9, f"digits-vit-hr top-1 on the first 64 test images {acc:.4f} < 0.9"


@pytest.mark.slow
def test_hr_reaches_95_percent(hr_model):
    acc = digits.evaluate_top1(digits.torch_predict_fn(hr_model), variant="hr")
    assert acc >= 0.95, f"digits-vit-hr test accuracy {acc:.4f} < 0.95"


def test_evaluate_top1_hr_batches(split):
    _, _, _, y_test = split
    seen = []

    def oracle(xb, _state={"i": 0}):
        assert xb.shape[1:] == (3, 384, 384) and xb.dtype == np.float32
        seen.append(len(xb))
        labels = y_test[_state["i"]:_state["i"] + len(xb)]
        _state["i"] += len(xb)
        return np.eye(10, dtype=np.float32)[labels]

    assert digits.evaluate_top1(oracle, batch_size=32, variant="hr", limit=70) == 1.0
    assert seen == [32, 32, 6]


def test_build_model_hr_missing_weights(monkeypatch, tmp_path):
    pytest.importorskip("torch")
    monkeypatch.setattr(digits, "WEIGHTS_PATH_HR", tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError, match="--variant hr"):
        digits.build_model(variant="hr")
    assert digits.weights_metadata("hr") == {}


def test_init_hr_from_base():
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    from edgeattn.models import train_digits_vit

    base = load_file(str(digits.WEIGHTS_PATH))
    images = digits.load_split_raw()[0][:32]  # training images only
    hr = train_digits_vit.init_hr_from_base(base, images)
    model = digits.build_model(weights=False, variant="hr")
    model.load_state_dict(hr, strict=True)
    for k, v in base.items():
        if "patch_embeddings" not in k and "position_embeddings" not in k:
            assert torch.equal(hr[k], v), k
    pos, pos_hr = base["vit.embeddings.position_embeddings"], hr["vit.embeddings.position_embeddings"]
    assert torch.equal(pos_hr[:, :1], pos[:, :1])  # CLS position kept
    # interpolated grid: the mean of the 24×24 grid stays close to the 8×8 grid's
    torch.testing.assert_close(pos_hr[0, 1:].mean(0), pos[0, 1:].mean(0), atol=0.05, rtol=0)


def test_zoo_digits_vit_hr():
    pytest.importorskip("torch")
    from edgeattn.models import zoo

    zm = zoo.build("digits-vit-hr")
    assert zm.inputs[0].shape == ("batch", 3, 384, 384)
    assert "576 tokens" in zm.description and zm.evaluate_top1 is not None
    assert zoo.build("digits-vit-hr@384").inputs[0].shape[-1] == 384
    with pytest.raises(ValueError, match="384"):
        zoo.build("digits-vit-hr@224")
