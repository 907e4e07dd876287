"""Metrics of reconstructions: feature agreement in the network, prediction agreement, and pixel similarity."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F

from featscope.extractors import Extractor
from featscope.featinv.features import to_grid

TOP_K = 5


def position_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per image: the median over grid positions of the cosine similarity of (B, C, H, W) maps over C."""
    cos = F.cosine_similarity(a.flatten(2), b.flatten(2), dim=1)
    return cos.median(dim=1).values


def pooled_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per image: cosine similarity of the spatially mean-pooled (B, C, H, W) maps."""
    return F.cosine_similarity(a.mean((2, 3)), b.mean((2, 3)), dim=1)


def _gaussian(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(3, 1, size, size).contiguous()


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per image SSIM of (B, 3, H, W) images in [0, 1] (Gaussian window, data range 1, channel mean).

    The window shrinks to the image for images smaller than 11 px (odd side).
    """
    size = min(window, *a.shape[-2:])
    size -= 1 - size % 2
    kernel = _gaussian(size, sigma, a.device)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, kernel, groups=3)

    a, b = a.float(), b.float()
    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return (num / den).mean((1, 2, 3))


@torch.no_grad()
def logits(extractor: Extractor, images: torch.Tensor) -> torch.Tensor | None:
    """The network's output logits for ``images`` when it is a classifier (labels known), else None."""
    if extractor.labels is None:
        return None
    layer = extractor.layer
    extractor.layer = None
    try:
        out = extractor.target_features(images)
    finally:
        extractor.layer = layer
    return out if out.dim() == 2 and out.shape[1] == len(extractor.labels) else None


def lpips_distance(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor | None, str | None]:
    """LPIPS (AlexNet) per image when the ``lpips`` package and its weights are available locally, else a note."""
    if importlib.util.find_spec("lpips") is None:
        return None, "LPIPS skipped: the lpips package is not installed (pip install lpips)"
    alexnet = Path(torch.hub.get_dir()) / "checkpoints" / "alexnet-owt-7be5be79.pth"
    if not alexnet.is_file():
        return None, f"LPIPS skipped: the AlexNet weights are not in {alexnet.parent} (no download is attempted)"
    import lpips

    metric = lpips.LPIPS(net="alex", verbose=False).to(a.device).eval()
    with torch.no_grad():
        return metric(a * 2 - 1, b * 2 - 1).flatten(), None


@torch.no_grad()
def compare(
    extractor: Extractor,
    layout: str,
    originals: torch.Tensor,
    reference: torch.Tensor,
    reconstructions: torch.Tensor,
) -> tuple[dict[str, list[float] | None], list[str]]:
    """Per-image metrics of reconstructions against the images they came from, and notes on skipped ones.

    ``originals``: the images the features were computed from; ``reference``: the same at the
    reconstructions' size (for MSE, SSIM, LPIPS).
    """
    notes = []
    f_orig = to_grid(extractor.target_features(originals).float(), layout)
    f_recon = to_grid(extractor.target_features(reconstructions).float(), layout)
    metrics: dict[str, list[float] | None] = {
        "cosine_median": position_cosine(f_orig, f_recon).tolist(),
        "cosine_pooled": pooled_cosine(f_orig, f_recon).tolist(),
        "mse": ((reference.float() - reconstructions.float()) ** 2).mean((1, 2, 3)).tolist(),
        "ssim": ssim(reference, reconstructions).tolist(),
    }
    l_orig, l_recon = logits(extractor, originals), logits(extractor, reconstructions)
    if l_orig is None:
        metrics["top1_agreement"] = metrics["top5_agreement"] = None
        notes.append(f"top-1/top-5 agreement n/a: {extractor.name} has no classifier head with known labels")
    else:
        label = l_orig.argmax(1, keepdim=True)
        metrics["top1_agreement"] = (l_recon.argmax(1, keepdim=True) == label).flatten().float().tolist()
        if l_recon.shape[1] > TOP_K:
            top = l_recon.topk(TOP_K, dim=1).indices
            metrics["top5_agreement"] = (top == label).any(1).float().tolist()
        else:
            metrics["top5_agreement"] = None
            notes.append(f"top-5 agreement n/a: {extractor.name} has only {l_recon.shape[1]} classes")
    lp, note = lpips_distance(reference.float(), reconstructions.float())
    metrics["lpips"] = lp.tolist() if lp is not None else None
    if note:
        notes.append(note)
    return metrics, notes
