"""Objectives: the algebra, hand-computed values of each loss, gradients, augmentation and regularisers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from featscope.errors import FeatscopeError
from featscope.extractors import load_extractor
from featscope.extractors.base import Extractor
from featscope.objectives import (
    Context,
    Cutouts,
    class_loss,
    classifier_difference,
    clip_text,
    last_linear,
    latent_background_l2,
    latent_foreground_l2,
    mask_at,
    neuron,
    pixel_l1,
    pixel_l2,
    px_background_l2,
    px_foreground_l2,
)

Z1 = (2.0, 0.0, -1.0)  # logits of net 1 on a grey image
Z2 = (0.5, 1.5, 0.0)  # logits of net 2


class Logits(nn.Module):
    """A differentiable 'classifier' whose logits on an image are ``base + 10 * (mean pixel - 0.5) * slope``."""

    def __init__(self, base: tuple[float, ...], slope: tuple[float, ...] = (1.0, -1.0, 0.5)) -> None:
        super().__init__()
        self.register_buffer("base", torch.tensor(base))
        self.register_buffer("slope", torch.tensor(slope))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.base + 10 * (images.mean((1, 2, 3)) - 0.5)[:, None] * self.slope


def grey(batch: int = 1, size: int = 16) -> torch.Tensor:
    return torch.full((batch, 3, size, size), 0.5)


def ctx_of(images: torch.Tensor, **kwargs) -> Context:
    return Context(images=images, latents=torch.zeros(len(images), 4, 8, 8), **kwargs)


def softmax(z: tuple[float, ...]) -> list[float]:
    exps = [math.exp(v) for v in z]
    return [e / sum(exps) for e in exps]


# -- algebra ------------------------------------------------------------------------------------
def test_objectives_add_subtract_scale_and_negate():
    a = pixel_l1()
    b = class_loss(Logits(Z1), 0, "conf", augment=False)
    ctx = ctx_of(grey(2) + 0.1, start_image=grey(2))
    va, vb = a(ctx), b(ctx)
    assert va.shape == (2,)
    torch.testing.assert_close((a + b)(ctx), va + vb)
    torch.testing.assert_close((a - b)(ctx), va - vb)
    torch.testing.assert_close((2.0 * a)(ctx), 2 * va)
    torch.testing.assert_close((a * 2.0)(ctx), 2 * va)
    torch.testing.assert_close((-a)(ctx), -va)
    torch.testing.assert_close(sum([a, b, 3 * a])(ctx), 4 * va + vb)
    assert (a - 2.5 * b).name == "pixel_l1 - 2.5 * class_loss(Logits, 0, conf)"
    assert (-a + b).name == "-pixel_l1 + class_loss(Logits, 0, conf)"
    assert [w for w, _ in (a + b - 3 * a).terms] == [-2.0, 1.0]


def test_evaluate_gives_the_total_and_each_term():
    a, b = pixel_l1(), pixel_l2()
    ctx = ctx_of(grey(1) + 0.2, start_image=grey(1))
    total, parts = (a + 10 * b).evaluate(ctx)
    torch.testing.assert_close(parts["pixel_l1"], torch.tensor([0.2]))
    torch.testing.assert_close(parts["pixel_l2"], torch.tensor([0.04]))
    torch.testing.assert_close(total, torch.tensor([0.2 + 0.4]))


def test_two_different_terms_with_one_name_are_refused():
    with pytest.raises(FeatscopeError, match="share a name"):
        pixel_l1() + pixel_l1()


# -- classifier losses, checked by hand -------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("ce", -math.log(softmax(Z1)[0])),
        ("log_conf", -math.log(softmax(Z1)[0])),
        ("conf", -softmax(Z1)[0]),
    ],
)
def test_class_loss_values(kind, expected):
    loss = class_loss(Logits(Z1), 0, kind)(ctx_of(grey(2)))
    torch.testing.assert_close(loss, torch.full((2,), expected))


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("conf", -softmax(Z1)[0] + softmax(Z2)[0]),
        ("log_conf", -math.log(softmax(Z1)[0]) + math.log(softmax(Z2)[0])),
        ("logit_margin", -(2.0 - 0.0) + (0.5 - 1.5)),  # margins over the non-target logits
    ],
)
def test_classifier_difference_values(kind, expected):
    loss = classifier_difference(Logits(Z1), Logits(Z2), 0, kind)(ctx_of(grey(1)))
    torch.testing.assert_close(loss, torch.tensor([expected]))


def test_logit_margin_has_a_real_gradient_unlike_the_published_formula():
    images = grey(1).requires_grad_(True)
    net1, net2 = Logits(Z1), Logits(Z2, slope=(0.0, 1.0, 0.0))
    loss = classifier_difference(net1, net2, 0, "logit_margin")(ctx_of(images))
    (grad,) = torch.autograd.grad(loss.sum(), images)
    # loss = -(z1_0 - z1_1) + (z2_0 - z2_1) (logit 1 is the largest non-target one), dz/dm = 10 * slope,
    # m the mean pixel: dloss/dm = 10 * (-(1 - (-1)) + (0 - 1)) = -30, spread over the pixels
    per_mean = 10 * (-(1.0 - -1.0) + (0.0 - 1.0))
    torch.testing.assert_close(grad, torch.full_like(grad, per_mean / images[0].numel()))

    # DiG-IN's 'logits' loss as written: subtracting -1e12 at the target makes the max the target itself
    z = net1(images)
    mask = torch.zeros_like(z)
    mask[:, 0] = -1e12
    published = -(z[:, 0] - torch.max(z - mask, dim=1)[0]).mean()
    (published_grad,) = torch.autograd.grad(published, images)
    assert published_grad.abs().max() == 0 and grad.abs().max() > 0


def test_class_labels_by_name_and_unknown_labels():
    net = Extractor(Logits(Z1), name="toy", labels=("cat", "dog", "fox"))
    ctx = ctx_of(grey(1))
    torch.testing.assert_close(class_loss(net, "dog")(ctx), class_loss(net, 1)(ctx))
    with pytest.raises(FeatscopeError, match="no class 'dgo'; did you mean dog"):
        class_loss(net, "dgo")
    with pytest.raises(FeatscopeError, match="no class names"):
        class_loss(Logits(Z1), "dog")
    with pytest.raises(FeatscopeError, match="out of range"):
        class_loss(Logits(Z1), 7)(ctx)
    with pytest.raises(FeatscopeError, match="unknown loss kind"):
        class_loss(Logits(Z1), 0, "logits")


# -- augmentation -------------------------------------------------------------------------------------
def test_cutouts_shapes_sizes_noise_and_determinism():
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cut = Cutouts(num=16, cut_power=0.3, noise_sd=0.0)
    views = cut(images, (16, 16), [torch.Generator().manual_seed(s) for s in (0, 1)])
    assert views.shape == (32, 3, 16, 16)
    again = cut(images, (16, 16), [torch.Generator().manual_seed(s) for s in (0, 1)])
    assert torch.equal(views, again)
    alone = cut(images[1:], (16, 16), [torch.Generator().manual_seed(1)])
    assert torch.equal(views[16:], alone)  # a sample's views do not depend on the batch
    # an image at the network's input size is only noised: cutouts are the whole image
    small = grey(1, 16)
    noised = Cutouts(num=4, noise_sd=0.005)(small, (16, 16), [torch.Generator().manual_seed(0)])
    assert noised.shape == (4, 3, 16, 16)
    assert abs((noised - 0.5).std().item() - 0.005) < 5e-4 and abs((noised - 0.5).mean().item()) < 5e-4


def test_class_loss_averages_over_the_augmented_views():
    net = Logits(Z1)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    cut = Cutouts(num=5, noise_sd=0.01)
    ctx = ctx_of(images, augment=cut, generators=[torch.Generator().manual_seed(s) for s in (0, 1)])
    loss = class_loss(net, 0)(ctx)
    views = cut(images, (16, 16), [torch.Generator().manual_seed(s) for s in (0, 1)])
    expected = -net(views).log_softmax(1)[:, 0].view(2, 5).mean(1)
    torch.testing.assert_close(loss, expected)
    plain = class_loss(net, 0, augment=False)(ctx)
    torch.testing.assert_close(plain, -net(images).log_softmax(1)[:, 0])


# -- neurons ---------------------------------------------------------------------------------------------
def small_classifier() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4)
    )


def test_neuron_defaults_to_the_input_of_the_last_linear_layer():
    net = small_classifier()
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert last_linear(net) == "4"
    features = net[:4](images)
    torch.testing.assert_close(neuron(net, None, 2)(ctx_of(images)), -features[:, 2])
    torch.testing.assert_close(neuron(net, None, 2, maximise=False)(ctx_of(images)), features[:, 2])
    assert neuron(net, None, 2).name == "neuron(Sequential, input of 4, 2)"
    assert not net[4]._forward_pre_hooks  # the hook is removed


def test_neuron_of_a_named_layer_averages_the_spatial_map_and_gets_a_gradient():
    net = small_classifier()
    images = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    value = neuron(net, "1", 4)(ctx_of(images))
    torch.testing.assert_close(value, -net[:2](images)[:, 4].mean((1, 2)))
    assert torch.autograd.grad(value.sum(), images)[0].abs().sum() > 0
    with pytest.raises(FeatscopeError, match="no layer 'fc2'"):
        neuron(net, "fc2", 0)


def test_neuron_through_an_extractor_uses_its_preprocessing():
    extractor = load_extractor("tiny_nets:tiny_cnn")
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    expected = extractor.set_layer("conv2")(images)[:, 1].mean((1, 2))
    torch.testing.assert_close(neuron(extractor, "conv2", 1)(ctx_of(images)), -expected)


# -- CLIP text ------------------------------------------------------------------------------------------
def test_clip_text_inner_product_and_spherical_distance():
    image_embedding = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())  # the mean colour as a 3-d embedding
    text = Extractor(
        image_embedding,
        name="toy-clip",
        mean=(0, 0, 0),
        std=(1, 1, 1),
        text_encoder=lambda t: torch.tensor([[0, 0, 2.0]]),
    )
    images = torch.zeros(1, 3, 8, 8)
    images[:, 0], images[:, 2] = 0.3, 0.4  # embedding (0.3, 0, 0.4): cos to (0, 0, 1) is 0.8
    ctx = ctx_of(images)
    torch.testing.assert_close(clip_text(text, "a photo")(ctx), torch.tensor([-0.8]))
    chord = math.dist((0.6, 0, 0.8), (0, 0, 1))
    expected = 2 * math.asin(chord / 2) ** 2
    torch.testing.assert_close(clip_text(text, "a photo", "spherical_distance")(ctx), torch.tensor([expected]))
    with pytest.raises(FeatscopeError, match="text tower"):
        clip_text(Extractor(image_embedding, name="no-text"), "a photo")


# -- regularisers ---------------------------------------------------------------------------------------
def test_background_terms_ignore_the_foreground_and_foreground_terms_the_background():
    start = grey(1)
    images = start.clone()
    images[..., :, 8:] += 0.2  # right half changed
    latents, start_latents = torch.zeros(1, 4, 8, 8), torch.zeros(1, 4, 8, 8)
    latents[..., :, 4:] = 1.0
    left = torch.zeros(16, 16)
    left[:, :8] = 1.0  # foreground = left half
    right = 1 - left
    ctx = Context(images, latents, start, start_latents, mask=left)
    torch.testing.assert_close(px_background_l2()(ctx), torch.tensor([0.04 * 0.5]))
    torch.testing.assert_close(latent_background_l2()(ctx), torch.tensor([0.5]))  # mask resized to 8x8
    torch.testing.assert_close(px_foreground_l2()(ctx), torch.tensor([0.0]))
    torch.testing.assert_close(latent_foreground_l2()(ctx), torch.tensor([0.0]))
    ctx.mask = right[None, None]  # the changed half is now foreground: background terms are zero
    torch.testing.assert_close(px_background_l2()(ctx), torch.tensor([0.0]))
    torch.testing.assert_close(latent_background_l2()(ctx), torch.tensor([0.0]))
    torch.testing.assert_close(px_foreground_l2()(ctx), torch.tensor([0.04 * 0.5]))
    ctx.mask = torch.ones(1, 1, 64, 64)
    assert px_background_l2()(ctx).item() == 0 and latent_background_l2()(ctx).item() == 0


def test_pixel_distances_and_missing_inputs():
    start = grey(2)
    images = start + torch.tensor([0.1, -0.3]).view(2, 1, 1, 1)
    ctx = ctx_of(images, start_image=start)
    torch.testing.assert_close(pixel_l1()(ctx), torch.tensor([0.1, 0.3]))
    torch.testing.assert_close(pixel_l2()(ctx), torch.tensor([0.01, 0.09]))
    with pytest.raises(FeatscopeError, match="needs a start image"):
        pixel_l2()(ctx_of(images))
    with pytest.raises(FeatscopeError, match="px_background_l2 needs a foreground mask"):
        px_background_l2()(ctx)


def test_mask_at_accepts_common_layouts():
    for mask in (torch.ones(16, 16), torch.ones(1, 16, 16), torch.ones(2, 1, 16, 16), torch.ones(1, 3, 16, 16)):
        resized = mask_at(mask, (8, 8))
        assert resized.shape[1:] == (1, 8, 8) and torch.allclose(resized, torch.ones(()))
