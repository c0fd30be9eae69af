"""Train digits-vit from scratch and save its weights (fp32 safetensors).

    python -m edgeattn.models.train_digits_vit [--epochs N] [--out PATH]
    python models/train_digits_vit.py

Trains on the fixed training split only (edgeattn.models.digits.load_split), with fixed
seeds, light augmentation (random shifts of ±2 pixels), AdamW and a warmup + cosine
schedule. Prints per-epoch train loss and test accuracy; exits 1 if the final test
accuracy is below 0.95.
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
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "position_embeddings" in name or "cls_token" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.999))
    steps_per_epoch = math.ceil(len(xt) / batch_size)
    total = epochs * steps_per_epoch
    warmup = warmup_epochs * steps_per_epoch

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    predict = digits.torch_predict_fn(model)

    t0 = time.time()
    acc = 0.0
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        total_loss, seen = 0.0, 0
        for start in range(0, len(xt), batch_size):
            idx = perm[start:start + batch_size]
            xb, yb = xt[idx], yt[idx]
            if max_shift:
                xb = _shift_batch(xb, max_shift, gen, background)
            logits = model(pixel_values=xb).logits
            loss = loss_fn(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total_loss += float(loss.detach()) * len(idx)
            seen += len(idx)
        model.eval()
        acc = digits.evaluate_top1(predict)
        print(f"epoch {epoch:3d}/{epochs}  train_loss {total_loss / seen:.4f}  test_acc {acc:.4f}  "
              f"lr {sched.get_last_lr()[0]:.2e}  {time.time() - t0:6.1f}s", flush=True)

    model.eval()
    state = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in model.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out), metadata={"model": "digits-vit", "epochs": str(epochs), "test_top1": f"{acc:.4f}"})
    print(f"saved {out} ({out.stat().st_size / 1e6:.2f} MB); training took {time.time() - t0:.1f}s")
    return acc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--out", type=Path, default=digits.WEIGHTS_PATH)
    args = ap.parse_args(argv)
    acc = train(args.epochs, args.out)
    print(f"final test accuracy: {acc:.4f}")
    if acc < MIN_ACCURACY:
        print(f"FAIL: test accuracy {acc:.4f} < {MIN_ACCURACY}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
