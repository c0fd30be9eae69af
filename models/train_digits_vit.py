"""Train digits-vit from scratch (or digits-vit-hr from it) and save the weights (fp32 safetensors).

    python -m edgeattn.models.train_digits_vit [--epochs N] [--out PATH]
    python -m edgeattn.models.train_digits_vit --variant hr [--epochs N] [--out PATH] [--base-weights PATH]
    python models/train_digits_vit.py [--variant hr]

Trains on the fixed training split only (edgeattn.models.digits.load_split), with fixed
seeds, light augmentation (random shifts of ±2 pixels), AdamW and a warmup + cosine
schedule. Prints per-epoch train loss and test accuracy; exits 1 if the final test
accuracy is below 0.95.

--variant hr (digits-vit-hr: 384×384, patch 16, 576 tokens + CLS; training it from scratch
at 577 tokens would take ~1.5 h on 2 CPU cores) starts from the committed digits-vit
weights instead: transformer blocks, layernorms, CLS token and classifier are copied, the
8×8 position embeddings are interpolated bilinearly to 24×24 (the same half-pixel geometry
as the image upscale), and the 16×16 patch-embedding conv is fitted by least squares on
the training images so that its response approximates the base model's 4×4 conv response
on the same image content, interpolated to the 24×24 grid (a plain resampling of the 4×4
kernel only reaches ~65% zero-shot: a 16-px patch covers 1/3 of a digit pixel, so it must
infer the slopes the 4×4 conv sees). The zero-shot accuracy is printed, then the whole
model is fine-tuned for a few epochs (shifts of ±24 px = ±2 px at 32×32, small lr).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a file: make `edgeattn.models` importable anyway
    try:
        import edgeattn.models.digits  # noqa: F401
    except ImportError:  # not installed: fall back to the source tree
        sys.path.insert(0, str(Path(__file__).resolve().parent))

try:
    from edgeattn.models import digits
except ImportError:  # pragma: no cover - source-tree fallback
    import digits  # type: ignore[no-redef]

SEED = 0
MIN_ACCURACY = 0.95


def _shift_batch(xb, max_shift: int, gen, background: float):
    """Randomly translate each image by up to ±max_shift pixels (zero-padding = background)."""
    import torch

    n, c, h, w = xb.shape
    padded = torch.full((n, c, h + 2 * max_shift, w + 2 * max_shift), background, dtype=xb.dtype)
    padded[:, :, max_shift:max_shift + h, max_shift:max_shift + w] = xb
    offs = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=gen)
    out = torch.empty_like(xb)
    for i in range(n):
        dy, dx = int(offs[i, 0]), int(offs[i, 1])
        out[i] = padded[i, :, dy:dy + h, dx:dx + w]
    return out


def _optimizer(model, lr: float, weight_decay: float, total: int, warmup: int):
    """AdamW (no decay on norms, biases, position embeddings, CLS) + linear warmup, cosine decay."""
    import torch

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "position_embeddings" in name or "cls_token" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.999))

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)


def _train_epoch(model, opt, sched, loss_fn, batches, max_shift: int, gen, background: float, on_step=None) -> float:
    """One pass over `batches` of (images, labels) with shift augmentation; mean training loss."""
    import torch

    model.train()
    total_loss, seen = 0.0, 0
    for step, (xb, yb) in enumerate(batches, 1):
        if max_shift:
            xb = _shift_batch(xb, max_shift, gen, background)
        loss = loss_fn(model(pixel_values=xb).logits, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        total_loss += float(loss.detach()) * len(yb)
        seen += len(yb)
        if on_step:
            on_step(step, total_loss / seen)
    return total_loss / seen


def train(epochs: int, out: Path, batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 0.05,
          warmup_epochs: int = 3, max_shift: int = 2, label_smoothing: float = 0.1) -> float:
    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(2)
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    gen = torch.Generator().manual_seed(SEED)

    x_train, y_train, x_test, y_test = digits.load_split(digits.CONFIG["image_size"])
    xt = torch.from_numpy(x_train)
    yt = torch.from_numpy(y_train)
    background = float(x_train.min())  # pixel value 0 → -1.0

    model = digits.build_model(weights=False).train()
    steps_per_epoch = math.ceil(len(xt) / batch_size)
    opt, sched = _optimizer(model, lr, weight_decay, epochs * steps_per_epoch, warmup_epochs * steps_per_epoch)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    predict = digits.torch_predict_fn(model)

    t0 = time.time()
    acc = 0.0
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(len(xt), generator=gen)
        batches = ((xt[idx], yt[idx]) for idx in perm.split(batch_size))
        train_loss = _train_epoch(model, opt, sched, loss_fn, batches, max_shift, gen, background)
        model.eval()
        acc = digits.evaluate_top1(predict)
        print(f"epoch {epoch:3d}/{epochs}  train_loss {train_loss:.4f}  test_acc {acc:.4f}  "
              f"lr {sched.get_last_lr()[0]:.2e}  {time.time() - t0:6.1f}s", flush=True)

    model.eval()
    state = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in model.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out), metadata={"model": "digits-vit", "epochs": str(epochs), "test_top1": f"{acc:.4f}"})
    print(f"saved {out} ({out.stat().st_size / 1e6:.2f} MB); training took {time.time() - t0:.1f}s")
    return acc


# --- digits-vit-hr -----------------------------------------------------------------------

HR_EPOCHS = 3
_PATCH_W = "vit.embeddings.patch_embeddings.projection.weight"
_PATCH_B = "vit.embeddings.patch_embeddings.projection.bias"
_POS = "vit.embeddings.position_embeddings"


def fit_hr_patch_embedding(base_state: dict, images8: np.ndarray, batch_size: int = 64, ridge: float = 1e-4):
    """(weight (D, 3, P, P), bias (D,)) of the hr patch-embedding conv, fitted by (ridge)
    least squares so that conv_hr(x_hr) ≈ bilinear-upsample(conv_base(x_base)) (bias
    included) over all patches of `images8` (raw (N, 8, 8) training digits); the 3 input
    channels are identical, so the fitted kernel is split equally between them."""
    import torch
    import torch.nn.functional as F

    cfg, cfg_hr = digits.CONFIG, digits.CONFIG_HR
    w_base, b_base = base_state[_PATCH_W].double(), base_state[_PATCH_B].double()
    d, p = w_base.shape[0], cfg_hr["patch_size"]
    grid_hr = cfg_hr["image_size"] // p
    n_feat = p * p + 1  # one channel's patch pixels + intercept
    xtx = torch.zeros(n_feat, n_feat, dtype=torch.float64)
    xty = torch.zeros(n_feat, d, dtype=torch.float64)
    for start in range(0, len(images8), batch_size):
        im = images8[start:start + batch_size]
        x_base = torch.from_numpy(digits.preprocess_variant(im, "base")).double()
        tok = F.conv2d(x_base, w_base, b_base, stride=cfg["patch_size"])  # (B, D, 8, 8)
        target = F.interpolate(tok, size=(grid_hr, grid_hr), mode="bilinear", align_corners=False)
        target = target.permute(0, 2, 3, 1).reshape(-1, d)
        x_hr = torch.from_numpy(digits.preprocess_variant(im, "hr")[:, :1]).double()
        patches = F.unfold(x_hr, p, stride=p).transpose(1, 2).reshape(-1, p * p)  # row-major patches
        feats = torch.cat([patches, torch.ones(len(patches), 1, dtype=torch.float64)], dim=1)
        xtx += feats.T @ feats
        xty += feats.T @ target
    reg = ridge * float(xtx.diagonal().mean()) * torch.eye(n_feat, dtype=torch.float64)
    sol = torch.linalg.solve(xtx + reg, xty)  # (P*P + 1, D)
    kernel = sol[:-1].T.reshape(d, 1, p, p) / cfg_hr["num_channels"]
    weight = kernel.expand(-1, cfg_hr["num_channels"], -1, -1).to(torch.float32).contiguous()
    return weight, sol[-1].to(torch.float32).contiguous()


def init_hr_from_base(base_state: dict, images8: np.ndarray) -> dict:
    """State dict of digits-vit-hr initialised from digits-vit's (see the module docstring)."""
    import torch
    import torch.nn.functional as F

    hr_state = {k: v.clone() for k, v in base_state.items()}
    pos = base_state[_POS]  # (1, 1 + g*g, D)
    d = pos.shape[-1]
    g = digits.CONFIG["image_size"] // digits.CONFIG["patch_size"]
    g_hr = digits.CONFIG_HR["image_size"] // digits.CONFIG_HR["patch_size"]
    grid = pos[:, 1:].reshape(1, g, g, d).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(g_hr, g_hr), mode="bilinear", align_corners=False)
    hr_state[_POS] = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, g_hr * g_hr, d)], dim=1).contiguous()
    hr_state[_PATCH_W], hr_state[_PATCH_B] = fit_hr_patch_embedding(base_state, images8)
    return hr_state


def train_hr(epochs: int, out: Path, base_weights: Path, batch_size: int = 32, lr: float = 1e-4,
             weight_decay: float = 0.05, warmup_steps: int = 10, max_shift: int = 24,
             label_smoothing: float = 0.1) -> tuple[float, float]:
    """Initialise digits-vit-hr from digits-vit, fine-tune it on the training split; returns
    (zero-shot test top-1, final test top-1)."""
    import torch
    from safetensors.torch import load_file, save_file

    torch.set_num_threads(2)
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    t0 = time.time()

    images_train, y_train, _, _ = digits.load_split_raw()  # raw 8×8: preprocessed per batch
    yt = torch.from_numpy(y_train)
    background = -1.0  # pixel value 0

    model = digits.build_model(weights=False, variant="hr")
    model.load_state_dict(init_hr_from_base(load_file(str(base_weights)), images_train), strict=True)
    model.eval()
    predict = digits.torch_predict_fn(model)
    zero_shot = digits.evaluate_top1(predict, variant="hr")
    print(f"init from {base_weights.name}: zero-shot test_acc {zero_shot:.4f}  {time.time() - t0:6.1f}s", flush=True)

    steps_per_epoch = math.ceil(len(yt) / batch_size)
    opt, sched = _optimizer(model, lr, weight_decay, epochs * steps_per_epoch, warmup_steps)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    acc = zero_shot
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(len(yt), generator=gen)
        batches = ((torch.from_numpy(digits.preprocess_variant(images_train[idx.numpy()], "hr")), yt[idx])
                   for idx in perm.split(batch_size))

        def progress(step: int, loss: float, epoch: int = epoch) -> None:
            if step % 10 == 0:
                print(f"  epoch {epoch} step {step}/{steps_per_epoch}  train_loss {loss:.4f}  "
                      f"{time.time() - t0:6.1f}s", flush=True)

        train_loss = _train_epoch(model, opt, sched, loss_fn, batches, max_shift, gen, background, progress)
        model.eval()
        acc = digits.evaluate_top1(predict, variant="hr")
        print(f"epoch {epoch:3d}/{epochs}  train_loss {train_loss:.4f}  test_acc {acc:.4f}  "
              f"lr {sched.get_last_lr()[0]:.2e}  {time.time() - t0:6.1f}s", flush=True)

    model.eval()
    state = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in model.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out), metadata={"model": "digits-vit-hr", "init": f"digits-vit ({base_weights.name})",
                                         "epochs": str(epochs), "zero_shot_top1": f"{zero_shot:.4f}",
                                         "test_top1": f"{acc:.4f}"})
    print(f"saved {out} ({out.stat().st_size / 1e6:.2f} MB); training took {time.time() - t0:.1f}s")
    return zero_shot, acc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", choices=digits.VARIANTS, default="base",
                    help="base: digits-vit 32×32 from scratch; hr: digits-vit-hr 384×384 from digits-vit")
    ap.add_argument("--epochs", type=int, default=None, help=f"default 30 (base), {HR_EPOCHS} (hr)")
    ap.add_argument("--out", type=Path, default=None, help="default: the variant's committed weights path")
    ap.add_argument("--base-weights", type=Path, default=digits.WEIGHTS_PATH,
                    help="hr only: the digits-vit weights to start from")
    args = ap.parse_args(argv)
    out = args.out or digits.weights_path(args.variant)
    if args.variant == "hr":
        _, acc = train_hr(HR_EPOCHS if args.epochs is None else args.epochs, out, args.base_weights)
    else:
        acc = train(30 if args.epochs is None else args.epochs, out)
    print(f"final test accuracy: {acc:.4f}")
    if acc < MIN_ACCURACY:
        print(f"FAIL: test accuracy {acc:.4f} < {MIN_ACCURACY}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
