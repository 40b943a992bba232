"""RadImageNet's ResNet-50 as a second feature space beside Inception: uint8 slices N x 1 x H x W in, pooled
2048-d features N x 2048 (float64) out, batch by batch, from a weights file the user supplies.

The network. RadImageNet (Mei et al. 2022, "RadImageNet: an open radiologic deep learning research dataset
for effective transfer learning", Radiology: Artificial Intelligence 4(5) e210315, doi:10.1148/ryai.210315)
trained a ResNet-50 on 1.35 M annotated CT, MRI and ultrasound images (165 labels). Its published weights
are Keras files ("RadImageNet-ResNet50-notop.h5", github.com/BMEII-AI/RadImageNet, README and
acl/acl_train.py). MONAI Generative's tutorial for FID on medical images
(Project-MONAI/GenerativeModels, tutorials/generative/realism_diversity_metrics) loads a PyTorch port of them,
`torch.hub.load("Warvito/radimagenet-models", model="radimagenet_resnet50")`, and takes the spatial mean of
its last block: the 2048 channels of layer4, no fc layer. This module computes the same thing.

Two layouts of the same ResNet-50 without fc are accepted, told apart by the file's own keys:
  - "torchvision": torchvision's resnet50 (no conv biases, the stride on each block's 3x3 conv, BN eps 1e-5);
  - "keras": the Keras layout of the published weights as Warvito/radimagenet-models ports it
    (radimagenet_models/models/resnet.py): the same parameter names as torchvision, plus a bias on every
    convolution, the stride on each first block's 1x1 conv, BN eps 1.001e-5. A file with "conv1.bias" is
    this layout. Loading it into torchvision's network would put the stride in the wrong place, so it gets
    the Keras network.
Keys may carry one prefix ("module.", "backbone.", "model.", "_orig_mod.", "encoder.", "resnet.", or
several of them in a row); a dict wrapping the tensors under "state_dict" or "model" is unwrapped; fc.*
keys (a classification head) and BatchNorm's num_batches_tracked counters are dropped or not needed. Every
other key must be there with its shape, and nothing else may be: otherwise a one-line HeartjobsError names
the file and the first missing, unexpected or mis-shaped key. The file is read with
torch.load(weights_only=True): a pickle's code never runs.

The input convention, and where each part comes from:
  - grey to 3 channels by repeating the slice (the MONAI tutorial: `image.repeat(1, 3, 1, 1)`);
  - intensities in [0, 1] (uint8 / 255; the tutorial feeds MedNIST scaled to [0, 1] by ScaleIntensityRanged);
  - RGB to BGR and the channel means [0.406, 0.456, 0.485] subtracted, no division by a std (the tutorial's
    `subtract_mean` after `image[:, [2, 1, 0]]`). These are Keras' "caffe" ImageNet means (103.939, 116.779,
    123.68 in BGR) over 255, which is what RadImageNet's own training script gives: ImageDataGenerator with
    preprocessing_function=preprocess_input and rescale=1/255 (acl/acl_train.py). That Keras applies the
    preprocessing function before the rescale, so the two agree, is from reading Keras, not from a run here.
    For a grey slice the BGR swap changes nothing but which mean meets which copy;
  - 224 x 224: the size the ResNet-50 of the RadImageNet paper was trained at, as the brief of this
    module and third-party uses state; NOT confirmed here from the paper or the RadImageNet repository
    (whose fine-tuning script defaults to 256). The MONAI tutorial resizes nothing (it feeds 64 px MedNIST
    slices as they are). `size=None` does the same; the default is 224. Resizing is bilinear with
    antialiasing (torch's interpolate): no published convention fixes the filter;
  - features: the spatial mean of layer4's output, 2048-d (the tutorial's `spatial_average`; torchvision's
    avgpool is the same mean). The tutorial's L2 normalisation of features is computed but not returned
    there (it returns the unnormalised tensor), so none is applied here.

The weights cannot be downloaded by heartjobs: RadImageNet publishes them through its project page
(https://www.radimagenet.com/ and the Google Drive folder linked from github.com/BMEII-AI/RadImageNet), and
the PyTorch port through github.com/Warvito/radimagenet-models. Save the ported model's state_dict() with
torch.save and give its path. No public record of a sha256 for either file was found, so none is pinned;
the file's sha256 is recorded with every result (RadImageNetWeights.sha256).

Cost (2-core Xeon CPU, torch 2.14, batches of 25, 224 x 224 whatever the slice size): 4.8 s per 100 images
with 2 threads, 8.4 s with 1; channels-last memory format, used here, is about 1.5x faster than NCHW (7.0 s).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from heartjobs.errors import HeartjobsError, one_line
from heartjobs.hashing import sha256_file
from heartjobs.store.checkpoint import load_tensors

from .inception import BatchedFeatures

FEATURE_DIMS = 2048
INPUT_SIZE = 224
# BGR order, on [0, 1]: Keras' "caffe" means (103.939, 116.779, 123.68) / 255, as MONAI Generative's tutorial
# writes them.
BGR_MEAN = (0.406, 0.456, 0.485)
PREFIXES = ("module.", "backbone.", "model.", "_orig_mod.", "encoder.", "resnet.")
WRAPPERS = ("state_dict", "model")
LAYOUTS = ("torchvision", "keras")
KERAS_BN_EPS = 1.001e-5


def how_to_get() -> str:
    return (
        "RadImageNet's ResNet-50 weights are not downloaded by heartjobs: get them from the RadImageNet project "
        "(https://www.radimagenet.com/, or the model folder linked from https://github.com/BMEII-AI/RadImageNet) "
        "or its PyTorch port (https://github.com/Warvito/radimagenet-models), and save the network's "
        "state_dict() with torch.save"
    )


@dataclass(frozen=True)
class RadImageNetWeights:
    """A checked weights file: its path, sha256 and layout ("torchvision" or "keras")."""

    path: Path
    sha256: str
    layout: str
    kind = "radimagenet"  # beside InceptionWeights' kinds: what a record's weights.kind says
    standard = False  # no published FID is computed in this space

    def describe(self) -> dict:
        return {
            **asdict(self),
            "path": str(self.path.resolve()),
            "network": "radimagenet_resnet50",
            "kind": self.kind,
            "standard": self.standard,
        }


# --- the network ---


def build_backbone(layout: str) -> nn.Module:
    """ResNet-50 without fc, in `layout`; its forward gives layer4's map N x 2048 x h x w."""
    from torchvision.models import resnet50

    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}: one of {', '.join(LAYOUTS)}")
    net = resnet50(weights=None)
    del net.fc
    if layout == "keras":
        _to_keras_layout(net)
    return net


def _biased(conv: nn.Conv2d, stride: int) -> nn.Conv2d:
    return nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=stride,
        padding=conv.padding,
        bias=True,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )


def _to_keras_layout(net: nn.Module) -> None:
    """Keras' ResNet50 (as Warvito/radimagenet-models ports it): biased convolutions, the downsampling
    stride on each block's first 1x1 conv instead of its 3x3, BatchNorm eps 1.001e-5."""
    net.conv1 = _biased(net.conv1, 2)
    for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
        for block in layer:
            stride = block.conv2.stride[0]
            block.conv1 = _biased(block.conv1, stride)
            block.conv2 = _biased(block.conv2, 1)
            block.conv3 = _biased(block.conv3, 1)
            if block.downsample is not None:
                block.downsample[0] = _biased(block.downsample[0], block.downsample[0].stride[0])
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eps = KERAS_BN_EPS


def _backbone_forward(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


# --- reading and checking a weights file ---


def _unwrap(obj: object) -> object:
    for _ in range(3):  # {"state_dict": {...}} or {"model": {...}}, at most a few levels deep
        if (
            isinstance(obj, dict)
            and len(obj) == 1
            and next(iter(obj)) in WRAPPERS
            and isinstance(next(iter(obj.values())), dict)
        ):
            obj = next(iter(obj.values()))
        elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        else:
            break
    return obj


def _strip_prefixes(keys: list[str]) -> dict[str, str]:
    """new name -> old name, with every prefix in PREFIXES that all keys share removed (repeatedly)."""
    names = {k: k for k in keys}
    changed = True
    while changed and names:
        changed = False
        for prefix in PREFIXES:
            if all(new.startswith(prefix) for new in names):
                names = {new[len(prefix) :]: old for new, old in names.items()}
                changed = True
    return names


def _checked_state_dict(path: Path, loaded: object) -> tuple[dict[str, torch.Tensor], str]:
    """The file's tensors under torchvision's names and the layout they fit, or a one-line refusal."""

    def refuse(why: str) -> HeartjobsError:
        return HeartjobsError(f"RadImageNet weights: {path}: {why}; {how_to_get()}")

    obj = _unwrap(loaded)
    if not isinstance(obj, dict):
        raise refuse(f"not a state dict (it holds a {type(obj).__name__})")
    bad = next((k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if bad is not None or not obj:
        what = "it is empty" if not obj else f"entry {one_line(repr(bad), 80)} is not a tensor by name"
        raise refuse(f"not a state dict of tensors ({what})")
    names = _strip_prefixes(list(obj))
    state = {new: obj[old] for new, old in names.items() if not new.startswith("fc.")}
    layout = "keras" if "conv1.bias" in state else "torchvision"
    with torch.device("meta"):
        expected = build_backbone(layout).state_dict()
    for key, tensor in expected.items():
        if key not in state:
            if key.endswith("num_batches_tracked"):
                continue
            raise refuse(f"not a RadImageNet ResNet-50 ({layout} layout): missing layer {key}")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise refuse(
                f"not a RadImageNet ResNet-50 ({layout} layout): layer {names.get(key, key)} has shape "
                f"{tuple(state[key].shape)}, expected {tuple(tensor.shape)}"
            )
    unexpected = next((k for k in state if k not in expected), None)
    if unexpected is not None:
        raise refuse(f"not a RadImageNet ResNet-50 ({layout} layout): unexpected layer {names[unexpected]}")
    floating = next(
        (k for k, v in state.items() if not k.endswith("num_batches_tracked") and not v.is_floating_point()), None
    )
    if floating is not None:
        raise refuse(f"layer {names[floating]} holds {state[floating].dtype}, not floating-point weights")
    return state, layout


def resolve_weights(path: str | Path) -> RadImageNetWeights:
    """Check a user-supplied weights file now (not after hours of training) and record its sha256."""
    path = Path(path)
    if not path.is_file():
        raise HeartjobsError(f"RadImageNet weights: {path}: no such file; {how_to_get()}")
    try:
        loaded = load_tensors(path, "RadImageNet weights file")
    except HeartjobsError as exc:
        raise HeartjobsError(f"RadImageNet weights: {exc}; {how_to_get()}") from None
    _, layout = _checked_state_dict(path, loaded)
    return RadImageNetWeights(path, sha256_file(path), layout)


def load_backbone(weights: RadImageNetWeights, device: torch.device) -> nn.Module:
    """The checked network, on `device`, in eval mode."""
    loaded = load_tensors(weights.path, "RadImageNet weights file")
    state, layout = _checked_state_dict(weights.path, loaded)
    if layout != weights.layout:
        raise HeartjobsError(f"RadImageNet weights: {weights.path}: changed since it was checked")
    net = build_backbone(layout)
    net.load_state_dict(state, strict=False)  # strictness checked above; num_batches_tracked may be absent
    return net.to(device).eval()


# --- features ---


class FeatureExtractor(BatchedFeatures):
    """uint8 images N x 1 (or 3) x H x W -> RadImageNet ResNet-50 features N x 2048 (float64), batch by batch;
    the same interface as heartjobs.evaluation.inception.FeatureExtractor."""

    dims = FEATURE_DIMS

    def __init__(
        self, weights: RadImageNetWeights, device: torch.device, batch_size: int, size: int | None = INPUT_SIZE
    ):
        # NHWC: faster convolutions on the CPU, as for Inception (the module docstring's cost)
        self.model = load_backbone(weights, device).to(memory_format=torch.channels_last)
        self.weights, self.device, self.batch_size, self.size = weights, device, batch_size, size
        self.mean = torch.tensor(BGR_MEAN, device=device).view(1, 3, 1, 1)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 -> the network's input: [0, 1], 3 channels, BGR, means subtracted, resized to size."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"uint8 images N x 1 x H x W (or N x 3 x H x W), got {images.dtype} {tuple(images.shape)}")
        x = images.to(self.device, non_blocking=True).float().div_(255.0)
        if self.size is not None and tuple(x.shape[2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x[:, [2, 1, 0]]
        return x - self.mean

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        x = self.preprocess(images).contiguous(memory_format=torch.channels_last)
        features = _backbone_forward(self.model, x)
        return features.mean(dim=(2, 3)).double().cpu().numpy()

    def protocol(self) -> dict:
        """What a result records about this feature space."""
        return {
            "features": "radimagenet",
            "dims": FEATURE_DIMS,
            "input_size": self.size,
            "channels": "grey repeated to 3, BGR",
            "mean": list(BGR_MEAN),
            "weights": self.weights.describe(),
        }
