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
