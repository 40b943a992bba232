"""RadImageNet's ResNet-50 feature space, tested with untrained networks of the same architecture (the real
weights cannot be downloaded here): shapes, determinism, batch independence, the input convention, and the
refusals of files that do not fit."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models import resnet50

from heartjobs.errors import HeartjobsError
from heartjobs.evaluation import radimagenet as rin


def _images(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    out = []
    for i in range(n):
        r = 0.3 + 0.4 * torch.rand(1, generator=generator).item()
        disc = ((xx**2 + yy**2) < r**2).float() * (120 + 20 * i)
        noise = 20 * torch.rand(size, size, generator=generator)
        out.append((disc + noise).clamp(0, 255).to(torch.uint8))
    return torch.stack(out)[:, None]


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("rin") / "resnet50.pt"
    torch.save(resnet50(weights=None).state_dict(), path)  # with fc.*: dropped on loading
    return path


@pytest.fixture(scope="module")
def extractor(torchvision_file):
    return rin.FeatureExtractor(rin.resolve_weights(torchvision_file), torch.device("cpu"), batch_size=4)


def test_features_are_n_by_2048_float64_deterministic_and_batch_independent(extractor, torchvision_file):
    images = _images(5)
    first = extractor(images)
    assert first.shape == (5, 2048) and first.dtype == np.float64
    assert np.isfinite(first).all() and first.std() > 0
    np.testing.assert_array_equal(extractor(images), first)
    batched = extractor.of_batches((images[i : i + 2] for i in range(0, 5, 2)), 5, "radimagenet features")
    one_by_one = np.concatenate([extractor(images[i : i + 1]) for i in range(5)])
    scale = np.abs(first).max()
    np.testing.assert_allclose(batched, first, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(one_by_one, first, rtol=1e-5, atol=1e-5 * scale)
    # different images, different features
    assert not np.allclose(first[0], first[1])


def test_sha256_and_protocol_are_recorded(extractor, torchvision_file):
    weights = extractor.weights
    assert weights.sha256 == hashlib.sha256(torchvision_file.read_bytes()).hexdigest()
    assert weights.layout == "torchvision"
    protocol = extractor.protocol()
    assert protocol["weights"]["sha256"] == weights.sha256 and protocol["dims"] == 2048
    assert protocol["input_size"] == 224 and protocol["mean"] == [0.406, 0.456, 0.485]


def test_input_convention(extractor):
    """[0, 1], the grey slice in all 3 channels, the BGR means subtracted, 224 x 224."""
    images = torch.full((1, 1, 64, 64), 255, dtype=torch.uint8)
    x = extractor.preprocess(images)
    assert x.shape == (1, 3, 224, 224)
    assert torch.allclose(x[0, :, 100, 100], torch.tensor([1 - 0.406, 1 - 0.456, 1 - 0.485]))
    rgb = torch.zeros((1, 3, 224, 224), dtype=torch.uint8)
    rgb[:, 0] = 255  # red: lands in the last (R) channel of BGR
    y = extractor.preprocess(rgb)
    assert torch.allclose(y[0, :, 5, 5], torch.tensor([-0.406, -0.456, 1 - 0.485]))


def test_the_features_are_the_spatial_mean_of_layer4(extractor, torchvision_file):
    """Equal to torchvision's resnet50 without fc (its avgpool) on the same preprocessed input."""
    net = resnet50(weights=None)
    net.load_state_dict(torch.load(torchvision_file, weights_only=True))
    net.fc = torch.nn.Identity()
    images = _images(2)
    with torch.inference_mode():
        expected = net.eval()(extractor.preprocess(images)).double().numpy()
    np.testing.assert_allclose(extractor(images), expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


@pytest.mark.parametrize("prefix", ["module.", "backbone.", "module.backbone."])
def test_prefixed_and_wrapped_files_give_the_same_features(tmp_path, torchvision_file, extractor, prefix):
    state = torch.load(torchvision_file, weights_only=True)
    path = tmp_path / "prefixed.pt"
    torch.save({"state_dict": {prefix + k: v for k, v in state.items() if not k.startswith("fc.")}}, path)
    other = rin.FeatureExtractor(rin.resolve_weights(path), torch.device("cpu"), batch_size=4)
    images = _images(2)
    np.testing.assert_array_equal(other(images), extractor(images))


def test_the_keras_layout_is_recognised_and_strides_its_1x1_conv(tmp_path):
    torch.manual_seed(1)
    net = rin.build_backbone("keras")
    assert net.layer2[0].conv1.stride == (2, 2) and net.layer2[0].conv2.stride == (1, 1)
    assert net.conv1.bias is not None and net.bn1.eps == rin.KERAS_BN_EPS
    path = tmp_path / "keras.pt"
    torch.save(net.state_dict(), path)
    weights = rin.resolve_weights(path)
    assert weights.layout == "keras"
    features = rin.FeatureExtractor(weights, torch.device("cpu"), batch_size=2, size=64)(_images(2))
    assert features.shape == (2, 2048) and np.isfinite(features).all()


def _refusal(path: Path) -> str:
    with pytest.raises(HeartjobsError) as info:
        rin.resolve_weights(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "radimagenet.com" in message
    return message


def test_a_wrong_shape_or_a_missing_or_extra_layer_is_refused_in_one_line(tmp_path, torchvision_file):
    state = torch.load(torchvision_file, weights_only=True)
    wrong = dict(state, **{"layer3.2.conv2.weight": torch.zeros(256, 256, 1, 1)})
    torch.save(wrong, tmp_path / "wrong.pt")
    assert "layer3.2.conv2.weight has shape (256, 256, 1, 1), expected (256, 256, 3, 3)" in _refusal(
        tmp_path / "wrong.pt"
    )
    missing = {"module." + k: v for k, v in state.items() if k != "layer4.1.bn2.running_var"}
    torch.save(missing, tmp_path / "missing.pt")
    assert "missing layer layer4.1.bn2.running_var" in _refusal(tmp_path / "missing.pt")
    extra = dict(state, **{"layer5.0.conv1.weight": torch.zeros(1)})
    torch.save(extra, tmp_path / "extra.pt")
    assert "unexpected layer layer5.0.conv1.weight" in _refusal(tmp_path / "extra.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    assert "not a state dict" in _refusal(tmp_path / "tensor.pt")
    assert "no such file" in _refusal(tmp_path / "absent.pt")


class _Payload:
    def __reduce__(self):
        return (Path.touch, (Path(_Payload.marker),))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_pickle_that_is_not_a_state_dict_is_refused_without_running_it(tmp_path):
    _Payload.marker = str(tmp_path / "ran")
    for name, save in (("torch.pt", lambda obj, f: torch.save(obj, f)), ("plain.pkl", pickle.dump)):
        path = tmp_path / name
        with open(path, "wb") as f:
            save({"conv1.weight": _Payload()}, f)
        message = _refusal(path)
        assert "unreadable" in message
        assert not (tmp_path / "ran").exists()
