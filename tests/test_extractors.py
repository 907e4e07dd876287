"""Extractors: tiny random-weight networks saved in their real formats and loaded through the spec path."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from urllib.parse import urlparse

import open_clip
import pytest
import timm
import torch
import torchvision.transforms.functional as TF
from safetensors.torch import save_file
from torchvision import models

from featscope.errors import InputFileError, SpecError
from featscope.extractors import Spec, list_layers, load_extractor, parse_spec, straight_through_round
from featscope.extractors.base import IMAGENET_MEAN, IMAGENET_STD
from featscope.world import loaders
from featscope.world.models import WorldClassifier

TINY_CLIP = "featscope-tiny-clip"
USER_NET = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, 4)
        self.unused = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv(x))))


def make():
    return Net(), {"input_size": 16, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "labels": list("abcd")}


def plain():
    return Net()
"""


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(0))


def normalise(x: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    """The preprocessing of a non-quantised extractor, written out with torchvision's resize (antialiased)."""
    x = TF.resize(x, [size, size], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


# -- specs ----------------------------------------------------------------------------------


def test_parse_spec_forms() -> None:
    assert parse_spec("clip:RN50") == Spec("clip", "RN50", None)
    assert parse_spec("open_clip:ViT-B-32/laion2b_s34b_b79k@visual.transformer.resblocks.3") == Spec(
        "open_clip", "ViT-B-32/laion2b_s34b_b79k", "visual.transformer.resblocks.3"
    )
    assert parse_spec("open_clip:RN50//abs/ckpt.pt") == Spec("open_clip", "RN50//abs/ckpt.pt")
    assert parse_spec("/some/dir/net.py:make@layer1.0") == Spec("file", "/some/dir/net.py:make", "layer1.0")
    assert parse_spec("torch.nn:Linear") == Spec("module", "torch.nn:Linear")
    assert parse_spec("world:shape-net@block3").base == "world:shape-net"
    with pytest.raises(SpecError, match="empty layer"):
        parse_spec("world:shape-net@")


def test_unknown_family_lists_families() -> None:
    with pytest.raises(SpecError) as error:
        load_extractor("tourchvision:resnet50")
    message = one_line(error)
    assert "did you mean torchvision" in message and "open_clip" in message and "world" in message
    with pytest.raises(SpecError):
        load_extractor("resnet50")


def test_unknown_model_names_suggest_close_ones() -> None:
    with pytest.raises(SpecError, match="resnet50"):
        load_extractor("torchvision:resnt50")
    with pytest.raises(SpecError, match="resnet50"):
        load_extractor("timm:resnet5o")
    with pytest.raises(SpecError, match="RN50"):
        load_extractor("open_clip:RN5O/openai")
    with pytest.raises(SpecError, match="shape-net"):
        load_extractor("world:shape")


# -- torchvision ----------------------------------------------------------------------------


def cache_file(monkeypatch, root: Path, name: str) -> Path:
    """Where torch hub looks for the DEFAULT weights of ``name`` under TORCH_HOME=root."""
    monkeypatch.setenv("TORCH_HOME", str(root))
    url = models.get_model_weights(name).DEFAULT.url
    path = root / "hub" / "checkpoints" / Path(urlparse(url).path).name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_torchvision_loads_weights_from_torch_hub_cache(tmp_path, monkeypatch, images) -> None:
    reference = models.resnet18().eval()
    torch.save(reference.state_dict(), cache_file(monkeypatch, tmp_path, "resnet18"))
    extractor = load_extractor("torchvision:resnet18")
    assert extractor.input_size == (224, 224) and not extractor.quantize and len(extractor.labels) == 1000
    one = images[:1]
    x = normalise(one, 224, IMAGENET_MEAN, IMAGENET_STD)
    with torch.no_grad():
        torch.testing.assert_close(extractor(one), reference(x))
        manual = reference.layer1(reference.maxpool(reference.relu(reference.bn1(reference.conv1(x)))))
        torch.testing.assert_close(extractor.set_layer("layer1")(one), manual)


def test_torchvision_missing_or_corrupt_weights_say_where_to_put_them(tmp_path, monkeypatch) -> None:
    path = cache_file(monkeypatch, tmp_path, "squeezenet1_1")
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # never download, even where a network exists
    with pytest.raises(SpecError) as error:
        load_extractor("torchvision:squeezenet1_1")
    message = one_line(error)
    assert path.name in message and str(path.parent) in message and "weights=PATH" in message
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(SpecError) as error:
        load_extractor("torchvision:squeezenet1_1")
    assert str(path) in one_line(error) and "delete it" in one_line(error)


def test_torchvision_preset_resnet50_with_user_weights(tmp_path, images) -> None:
    reference = models.resnet50().eval()
    path = tmp_path / "resnet50.pth"
    torch.save({"state_dict": reference.state_dict()}, path)  # a wrapped checkpoint, head included
    extractor = load_extractor("torchvision:resnet50@layer1", weights=path)
    assert extractor.quantize and extractor.input_size == (224, 224) and extractor.labels is None
    assert isinstance(extractor.network.fc, torch.nn.Identity)  # 2048-d pooled features
    torch.testing.assert_close(extractor.network.layer4[2].conv3.weight, reference.layer4[2].conv3.weight)
    with torch.no_grad():
        x = extractor.preprocess(images)
        pixels = (x * extractor.std + extractor.mean) * 255
        torch.testing.assert_close(pixels, pixels.round(), atol=1e-3, rtol=0)  # 8-bit quantised input
        manual = reference.layer1(reference.maxpool(reference.relu(reference.bn1(reference.conv1(x)))))
        torch.testing.assert_close(extractor(images), manual)


def test_user_weights_that_do_not_fit_are_one_line_errors(tmp_path) -> None:
    path = tmp_path / "other.safetensors"
    save_file(models.squeezenet1_1().state_dict(), str(path))
    with pytest.raises(InputFileError) as error:
        load_extractor("torchvision:resnet18", weights=path)
    assert "missing keys" in one_line(error) and str(path) in one_line(error)
    with pytest.raises(InputFileError, match="does not exist"):
        load_extractor("torchvision:resnet18", weights=tmp_path / "nothing.pth")


# -- timm -----------------------------------------------------------------------------------


def test_timm_local_weights_through_pretrained_cfg_overlay(tmp_path, images) -> None:
    reference = timm.create_model("test_resnet").eval()
    path = tmp_path / "test_resnet.safetensors"
    save_file(reference.state_dict(), str(path))
    extractor = load_extractor("timm:test_resnet@global_pool", weights=str(path))
    assert extractor.input_size == (160, 160) and len(extractor.labels) == 1000
    x = normalise(images, 160, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    with torch.no_grad():
        manual = reference.forward_head(reference.forward_features(x), pre_logits=True)
        torch.testing.assert_close(extractor(images), manual)
        torch.testing.assert_close(extractor.set_layer(None)(images), reference(x))


# -- open_clip ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    """A tiny registered open_clip architecture and a checkpoint of its random weights."""
    root = tmp_path_factory.mktemp("open_clip")
    config = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    (root / f"{TINY_CLIP}.json").write_text(json.dumps(config))
    open_clip.add_model_config(root / f"{TINY_CLIP}.json")
    clip = open_clip.create_model(TINY_CLIP).eval()
    torch.save(clip.state_dict(), root / "tiny-clip.pt")
    return clip, root / "tiny-clip.pt"


def test_open_clip_checkpoint_path_and_text(tiny_clip, images) -> None:
    clip, path = tiny_clip
    extractor = load_extractor(f"open_clip:{TINY_CLIP}/{path}")
    assert extractor.input_size == (32, 32) and not extractor.quantize and extractor.has_text
    assert all(name.startswith("visual") for name in extractor.layer_names())
    with torch.no_grad():
        torch.testing.assert_close(extractor(images), clip.encode_image(extractor.preprocess(images)))
        texts = ["a red circle", "a blue star"]
        tokens = open_clip.get_tokenizer(TINY_CLIP)(texts)
        torch.testing.assert_close(extractor.encode_text(texts), clip.encode_text(tokens))


def test_clip_family_with_weights_is_quantised(tiny_clip, images) -> None:
    clip, path = tiny_clip
    extractor = load_extractor(f"clip:{TINY_CLIP}@visual.transformer", weights=path)
    assert extractor.quantize and extractor.mean.flatten().tolist() == pytest.approx(
        [0.48145466, 0.4578275, 0.40821073]
    )
    with torch.no_grad():
        assert extractor(images).shape == (2, 17, 32)  # 16 patches + class token, width 32


def test_open_clip_needs_a_tag_or_file() -> None:
    with pytest.raises(SpecError, match="TAG"):
        load_extractor("open_clip:RN50")
    with pytest.raises(InputFileError, match="openai"):
        load_extractor("open_clip:RN50/no-such-tag")


# -- user networks --------------------------------------------------------------------------


@pytest.fixture
def user_file(tmp_path) -> Path:
    path = tmp_path / "tiny_user_net.py"
    path.write_text(textwrap.dedent(USER_NET))
    return path


def test_file_factory_with_options(user_file, images) -> None:
    extractor = load_extractor(f"{user_file}:make@pool")
    assert extractor.input_size == (16, 16) and extractor.labels == tuple("abcd")
    net = extractor.network
    x = normalise(images, 16, (0.5,) * 3, (0.25,) * 3)
    with torch.no_grad():
        torch.testing.assert_close(extractor(images), net.pool(torch.relu(net.conv(x))))


def test_module_factory_with_user_weights(user_file, tmp_path, monkeypatch, images) -> None:
    monkeypatch.syspath_prepend(str(user_file.parent))
    source = load_extractor("tiny_user_net:plain").network
    torch.save(source.state_dict(), tmp_path / "net.pt")
    extractor = load_extractor("tiny_user_net:plain", weights=tmp_path / "net.pt")
    assert extractor.input_size is None
    torch.testing.assert_close(extractor.network.conv.weight, source.conv.weight)


def test_factory_errors(user_file) -> None:
    with pytest.raises(SpecError, match="did you mean make"):
        load_extractor(f"{user_file}:mkae")
    with pytest.raises(InputFileError):
        load_extractor(f"{user_file.parent / 'missing.py'}:make")
    extractor = load_extractor(f"{user_file}:make@unused")
    with pytest.raises(SpecError, match="does not run"):
        extractor(torch.rand(1, 3, 16, 16))


# -- world classifiers ----------------------------------------------------------------------


@pytest.fixture
def world_file(tmp_path) -> tuple[WorldClassifier, Path]:
    torch.manual_seed(0)
    net = WorldClassifier(num_classes=5).eval()
    path = tmp_path / "shape-net.safetensors"
    net.save(path, {"task": "shape-net", "labels": ["circle", "square", "triangle", "star", "cross"], "metrics": {}})
    return net, path


def test_world_classifier_pool_features(world_file, images) -> None:
    net, path = world_file
    extractor = load_extractor("world:shape-net", weights=path)
    assert extractor.layer == "pool" and extractor.input_size == (32, 32) and extractor.labels[0] == "circle"
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(extractor(x), net.pool(net.block3(net.block2(net.block1(x)))))
        assert extractor(images).shape == (2, 128)


def test_world_missing_or_corrupt_packaged_weights(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(loaders, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(InputFileError) as error:
        load_extractor("world:color-net")
    assert "color-net.safetensors" in one_line(error) and "featscope world train" in one_line(error)
    (tmp_path / "color-net.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(InputFileError) as error:
        load_extractor("world:color-net")
    assert "reinstall featscope" in one_line(error)


def test_unknown_layer_suggests_close_name(world_file) -> None:
    with pytest.raises(SpecError) as error:
        load_extractor("world:shape-net@blok3", weights=world_file[1])
    assert "block3" in one_line(error)


# -- preprocessing and layers ---------------------------------------------------------------


def test_straight_through_rounding_has_identity_gradient(world_file) -> None:
    x = torch.rand(4, 3, 8, 8, requires_grad=True)
    y = straight_through_round(x * 255)
    assert torch.equal(y, (x * 255).round())
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 255.0))
    extractor = load_extractor("world:shape-net", weights=world_file[1])
    extractor.quantize = True
    images = torch.rand(1, 3, 48, 48, requires_grad=True)
    extractor(images).sum().backward()
    assert images.grad.abs().sum() > 0


def test_list_layers_names_types_and_shapes(world_file, user_file) -> None:
    layers = {name: (kind, shape) for name, kind, shape in list_layers("world:shape-net@fc", weights=world_file[1])}
    assert layers["block1"] == ("Sequential", (32, 32, 32))
    assert layers["block3"] == ("Sequential", (128, 8, 8))
    assert layers["pool"] == ("Sequential", (128,))
    assert layers["fc"] == ("Linear", (5,))
    user = {name: shape for name, _, shape in list_layers(f"{user_file}:plain")}
    assert user["conv"] == (8, 224, 224) and user["unused"] is None
