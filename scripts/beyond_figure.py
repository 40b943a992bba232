"""docs/img/phantom-beyond.png from jobs/phantom-beyond.sweep.toml's runs: each run's last sample grid,
models across, augmentation down, the real slices beside; the titles give FRD and FID (untrained, 192-d).

    python scripts/beyond_figure.py artifacts/phantom-beyond docs/img/phantom-beyond.png
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

root, out = Path(sys.argv[1]), Path(sys.argv[2])
models = ["gan", "wgan", "dcgan", "wgan_gp", "sngan"]
rows = [("default", "no augmentation"), ("augtranslation-cutout", "translation,cutout")]
fig, axes = plt.subplots(2, 6, figsize=(13.2, 5.8))
for r, (suffix, label) in enumerate(rows):
    for c, model in enumerate(models):
        run = root / f"{model}_{suffix}" / "v0001"
        ax = axes[r][c]
        ax.imshow(Image.open(sorted((run / "samples").glob("epoch_*.png"))[-1]), cmap="gray")
        fid = json.loads((run / "fid.json").read_text())
        ax.set_title(f"{model}, {label}\nFRD {fid['frd']['mean']:.2f}  FID {fid['fid_mean']:.2f}", fontsize=8)
        ax.axis("off")
    ax = axes[r][5]
    if r == 0:
        ax.imshow(Image.open(root / "gan_default" / "v0001" / "real.png"), cmap="gray")
        ax.set_title("real phantom slices", fontsize=8)
    ax.axis("off")
fig.suptitle(
    "The phantom at 64 px, 60 epochs x 200 slices each (12,000 images seen), samples at the last epoch", fontsize=9
)
fig.tight_layout(h_pad=2.0)
fig.savefig(out, dpi=90)
Image.open(out).convert("L").save(out, optimize=True)
print(out, out.stat().st_size)
