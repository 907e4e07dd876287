"""DiG-IN's word-swap start of a counterfactual: recorded cross-attention replayed in the solver's chain equals
prompt-to-prompt's live re-injection, blending keeps the source outside the mask, and the search keeps each image's
lowest-loss pair (tiny SD: the VAE and the UNet's real attention processors)."""

from __future__ import annotations

import torch

from featscope.investigate import cores
from featscope.investigate.word_swap_start import WordSwapStart, best_word_swap, latent_region, record_source
from featscope.investigate.wordswap import prompt_to_prompt, token_mapper
from featscope.objectives import pixel_l2
from featscope.solvers.configs import EndToEndConfig
from featscope.solvers.endtoend import optimize

STEPS = 4
CONFIG = EndToEndConfig(num_steps=STEPS, guidance_scale=3.0, iterations=0, cutouts=1, loss_steps=1)


def _inverted(backbone, batch: int = 1):
    images = torch.rand(batch, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    prompts = ["a cat on red", "a cat on dog"][:batch]
    x_t, null_texts = cores.null_inversion(backbone, images, prompts, num_steps=STEPS, guidance_scale=3.0,
                                           inner_steps=1)  # fmt: skip
    return images, prompts, x_t, null_texts


def _start(backbone, prompts, x_t, null_texts, until, blend_until, background=None) -> WordSwapStart:
    source = record_source(backbone, x_t, null_texts, prompts, guidance_scale=3.0, steps=STEPS)
    edited = [p.replace("cat", "dog") if "dog" not in p else p.replace("cat", "red") for p in prompts]
    pairs = zip(prompts, edited, strict=True)
    mappers = torch.stack([token_mapper(backbone, p, e, "cat", e.split()[1]) for p, e in pairs])
    return WordSwapStart(source, mappers, until, blend_until, background), edited


def test_the_replayed_source_attention_equals_prompt_to_prompts_live_reinjection(tiny_sd_backbone):
    backbone = tiny_sd_backbone
    images, prompts, x_t, null_texts = _inverted(backbone)
    edit, edited = _start(backbone, prompts, x_t, null_texts, [2], [0])
    mapper = edit.mappers[0]
    source, live = prompt_to_prompt(backbone, x_t, null_texts, prompts[0], edited[0], [0.5, 0.0], mapper=mapper,
                                    guidance_scale=3.0)  # fmt: skip
    kwargs = dict(prompt=edited, start_latent=x_t, null_texts=null_texts, start_image=images)
    replayed = optimize(backbone, pixel_l2(), config=CONFIG, step_edit=edit, quiet=True, **kwargs).images[0]
    torch.testing.assert_close(replayed, live[:1], atol=1e-4, rtol=0)  # tau 0.5: 2 of 4 steps re-injected
    assert float((replayed - live[1:]).abs().max()) > 1e-3  # and re-injection changed it (tau 0 differs)
    before = {k: type(v) for k, v in backbone.unet.attn_processors.items()}
    assert all(t.__name__ != "_LayerHook" for t in before.values())  # the processors are restored
    recon = backbone.decode(edit.source.latents[-1]).float().clamp(0, 1)
    torch.testing.assert_close(recon.cpu(), source, atol=1e-4, rtol=0)  # the recorded run is the regeneration


def test_blending_every_step_with_no_foreground_keeps_the_source_regeneration(tiny_sd_backbone):
    backbone = tiny_sd_backbone
    images, prompts, x_t, null_texts = _inverted(backbone)
    nothing = latent_region(backbone, torch.zeros(1, 1, 16, 16), 1)
    assert nothing.shape == (1, 1, *backbone.latent_shape[-2:]) and bool((nothing == 1).all())
    edit, edited = _start(backbone, prompts, x_t, null_texts, [0], [STEPS], nothing)
    kwargs = dict(prompt=edited, start_latent=x_t, null_texts=null_texts, start_image=images)
    blended = optimize(backbone, pixel_l2(), config=CONFIG, step_edit=edit, quiet=True, **kwargs).images[0]
    recon = backbone.decode(edit.source.latents[-1]).float().clamp(0, 1).cpu()
    torch.testing.assert_close(blended, recon, atol=1e-5, rtol=0)
    free = optimize(backbone, pixel_l2(), config=CONFIG, step_edit=edit.choose([(0, 0)], [0]), quiet=True,
                    **kwargs).images[0]  # fmt: skip
    assert float((free - recon).abs().max()) > 1e-3  # without blending the edited caption changes the image


def test_the_search_keeps_each_images_lowest_loss_pair_and_the_optimisation_starts_there(tiny_sd_backbone):
    backbone = tiny_sd_backbone
    images, prompts, x_t, null_texts = _inverted(backbone, batch=2)
    edit, edited = _start(backbone, prompts, x_t, null_texts, [0, 0], [0, 0],
                          latent_region(backbone, torch.zeros(1, 1, 16, 16), 2))  # fmt: skip
    kwargs = dict(prompt=edited, start_latent=x_t, null_texts=null_texts, start_image=images)
    chosen_edit, chosen, losses = best_word_swap(backbone, pixel_l2(), kwargs, edit, taus=(0.0, 0.5),
                                                 blends=(0.0, 1.0), config=CONFIG)  # fmt: skip
    pairs = [(0.0, 0.0), (0.0, 1.0), (0.5, 0.0), (0.5, 1.0)]
    assert losses.shape == (4, 2)
    for b in range(2):
        assert chosen[b] == pairs[int(losses[:, b].argmin())]
        assert (chosen_edit.until[b], chosen_edit.blend_until[b]) == (
            round(chosen[b][0] * STEPS),
            round(chosen[b][1] * STEPS),
        )
    start = optimize(backbone, pixel_l2(), config=CONFIG, step_edit=chosen_edit, quiet=True, **kwargs)
    torch.testing.assert_close(start.losses[0], losses.min(0).values, atol=1e-5, rtol=0)


def test_on_the_world_the_word_swap_start_already_flips_the_classifier_where_the_reconstruction_does_not():
    """A held-out world circle -> square with world:shape-net: iteration 0 of the word-swap start is a square for
    the classifier (the plain reconstruction is a circle), its pair is recorded, and the reconstruction reported is
    the source caption's regeneration, not the word swap."""
    from featscope.backbones import load_backbone
    from featscope.extractors import load_extractor
    from featscope.images import to_tensor
    from featscope.world.splits import split_images

    backbone = load_backbone("world:ddpm", device="cpu")
    net = load_extractor("world:shape-net@fc", device="cpu")
    pixels, records = split_images(40, "test")
    b = next(i for i, r in enumerate(records) if r.shape == "circle")
    image, caption = to_tensor(pixels[b : b + 1]), records[b].caption()
    config = EndToEndConfig(num_steps=10, guidance_scale=3.0, iterations=1, cutouts=1, loss_steps=1)
    inverted = cores.null_inversion(backbone, image, caption, num_steps=10, guidance_scale=3.0, inner_steps=2)
    common = dict(seeds=[0], prompts=caption, inverted=inverted, config=config)
    swapped = cores.counterfactual(backbone, net, image, "circle", "square", **common)  # the default start
    plain = cores.counterfactual(backbone, net, image, "circle", "square", start_from="reconstruction", **common)
    square = net.labels.index("square")
    assert swapped.target_confidence[0][1] > 0.5 > plain.target_confidence[0][1]  # [image, iterate 0, ...]
    assert swapped.word_swap_start[0] in [(t, blend) for t in (0.3, 0.4, 0.5) for blend in (0.0,)]
    torch.testing.assert_close(swapped.reconstruction, plain.reconstruction, atol=1e-4, rtol=0)
    assert cores.confidences(net, swapped.reconstruction, square)[0] < 0.5
