"""Spec families from plugins: a family registered from here loads through load_backbone / load_extractor."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint

import pytest
import torch
from torch import nn

from featscope import registry
from featscope.backbones import FAMILIES, check_spec, load_backbone
from featscope.backbones.index import PIPELINE_FAMILIES
from featscope.backbones.pixel import load_pixel
from featscope.errors import FeatscopeError, SpecError
from featscope.extractors import Extractor, load_extractor, parse_spec
from featscope.extractors.spec import Spec, family_names, usage
from featscope.study.fields import backbone_spec, network_spec


@pytest.fixture
def fresh_registry(monkeypatch):
    """The registry with the built-in plugins loaded; what a test registers is forgotten after it."""
    registry.load_plugins()
    monkeypatch.setattr(registry, "_backbones", dict(registry._backbones))
    monkeypatch.setattr(registry, "_extractors", dict(registry._extractors))
    monkeypatch.setattr(registry, "_text_encoders", list(registry._text_encoders))


def toy_extractor(spec: Spec, weights: str | None, pretrained: bool) -> Extractor:
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Extractor(network, name=spec.base, layer=spec.layer, input_size=(16, 16), mean=(0.5,) * 3, std=(0.5,) * 3)


def test_a_registered_backbone_family_loads_through_load_backbone(fresh_registry, tiny_pixel_folder, tmp_path):
    calls = []

    def toy_backbone(name: str, *, spec: str, dtype: torch.dtype):
        calls.append(name)
        return load_pixel(tiny_pixel_folder, spec=spec, dtype=dtype)

    registry.register_backbone("toy", toy_backbone, "toy:small (a test family)", names=["small"])
    backbone = load_backbone("toy:small")
    assert calls == ["small"] and backbone.spec == "toy:small" and backbone.image_size == (16, 16)
    assert check_spec("toy:small") == ("toy", "small")
    assert backbone_spec("toy:small", tmp_path) == "toy:small"
    with pytest.raises(SpecError, match="unknown toy model 'smal'; known: toy:small; did you mean toy:small"):
        load_backbone("toy:smal")
    with pytest.raises(SpecError, match="toy:small \\(a test family\\); did you mean toy:"):
        load_backbone("tyo:small")
    with pytest.raises(ValueError, match="unknown toy model"):
        backbone_spec("toy:big", tmp_path)
    assert calls == ["small"]  # names are checked before the loader runs


def test_a_registered_extractor_family_loads_through_load_extractor(fresh_registry, tmp_path):
    registry.register_extractor("toy", toy_extractor, "toy:net", names=("net",))
    assert parse_spec("toy:net@0") == Spec("toy", "net", "0") and parse_spec("toy:net").base == "toy:net"
    extractor = load_extractor("toy:net@1")
    assert extractor.name == "toy:net" and extractor.layer == "1"
    assert extractor(torch.rand(2, 3, 16, 16)).shape == (2, 4, 14, 14)
    assert network_spec("toy:net", tmp_path) == "toy:net"
    with pytest.raises(SpecError, match="unknown toy network 'toy:nett'; did you mean net"):
        load_extractor("toy:nett")
    with pytest.raises(
        SpecError, match="did you mean toy\\?.*FAMILY one of clip, torchvision, timm, open_clip, world, toy"
    ):
        load_extractor("tyo:net")
    registry.register_extractor("any", "test_registry:toy_extractor", "any:NAME")  # imported on use; any name
    assert load_extractor("any:whatever").name == "any:whatever"


def test_bad_family_names_are_refused_and_a_missing_loader_is_a_one_line_error(fresh_registry):
    with pytest.raises(ValueError, match="bad family name"):
        registry.register_backbone("my:family", lambda *a, **k: None, "my:family:NAME")
    registry.register_backbone("ghost", "no_such_featscope_module:load", "ghost:NAME")
    with pytest.raises(FeatscopeError, match="cannot import the plugin loader 'no_such_featscope_module:load'"):
        load_backbone("ghost:anything")


def test_entry_point_plugins_are_imported_once_and_broken_ones_warn(fresh_registry, monkeypatch, tmp_path):
    (tmp_path / "toy_featscope_plugin.py").write_text(
        textwrap.dedent(
            """
            from featscope.registry import register_extractor
            from test_registry import toy_extractor

            register_extractor("toyplug", toy_extractor, "toyplug:net", names=["net"])
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "toy_featscope_plugin", raising=False)
    entries = [
        EntryPoint("toy", "toy_featscope_plugin", registry.ENTRY_POINT_GROUP),
        EntryPoint("broken", "no_such_featscope_plugin", registry.ENTRY_POINT_GROUP),
    ]
    monkeypatch.setattr(registry, "entry_points", lambda group: entries if group == registry.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(registry, "_loaded", False)
    with pytest.warns(UserWarning, match="featscope plugin 'broken'.*failed to import"):
        assert load_extractor("toyplug:net").name == "toyplug:net"
    assert "world" in registry.extractor_families() and "world" in registry.backbone_families()
    registry.load_plugins()  # once per process: nothing is imported again


def test_built_in_families_are_registry_entries_from_one_list_and_registering_them_imports_no_model_code():
    code = (
        "import sys\nfrom featscope import registry\n"
        "assert registry.backbone_family('sd').builtin and registry.extractor_family('timm').builtin\n"
        "heavy = ('torch', 'diffusers', 'transformers', 'torchvision', 'timm', 'open_clip', 'featscope.world',"
        " 'featscope.backbones', 'featscope.extractors')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m.startswith(heavy)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"  # no loader module, no model library, no plugin
    assert list(registry.builtin_backbones()) == [family for family, *_ in registry.BUILTIN_BACKBONES]
    assert list(registry.builtin_extractors()) == [family for family, *_ in registry.BUILTIN_EXTRACTORS]
    assert list(FAMILIES) == list(registry.BUILTIN_FAMILIES) == ["sd", "sdxl", "sd3", "flux", "pixel"]
    assert family_names()[:4] == ["clip", "torchvision", "timm", "open_clip"]  # module / file are forms, not families
    assert usage().endswith("or module.path:factory / file.py:factory")
    takers = [name for name, family in registry.builtin_backbones().items() if family.takes_config]
    assert takers == ["sd", "sdxl"]
    assert set(PIPELINE_FAMILIES.values()) <= set(FAMILIES)  # diffusers pipelines map onto built-in families


def test_a_plugin_cannot_take_a_built_in_family(fresh_registry, tiny_pixel_folder):
    with pytest.warns(UserWarning, match="featscope's own sd: family wins"):
        registry.register_backbone("sd", lambda *a, **k: None, "sd:MINE")
    with pytest.warns(UserWarning, match="featscope's own timm: family wins"):
        registry.register_extractor("timm", toy_extractor, "timm:MINE")
    assert registry.backbone_family("sd").builtin and registry.extractor_family("timm").builtin
    assert load_backbone(f"pixel:{tiny_pixel_folder}").image_size == (16, 16)  # dispatched through the registry
    with pytest.raises(SpecError, match="only applies to sd: and sdxl: checkpoints"):
        load_backbone(f"pixel:{tiny_pixel_folder}", config="somewhere")


def test_a_built_in_family_without_its_optional_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "featscope.extractors.timm_nets", raising=False)
    with pytest.raises(SpecError, match=r"timm:resnet18 needs the timm package: pip install 'featscope\[timm\]'"):
        load_extractor("timm:resnet18", pretrained=False)
