"""The solvers' settings, each field declared once with its help and the paper's symbol (``featscope.settings``).

Light on purpose: the command line derives its options from these without importing torch or diffusers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from featscope.errors import FeatscopeError
from featscope.settings import Settings, comma_separated, knob


@dataclass(frozen=True)
class UniversalConfig(Settings):
    """Settings of the universal solver; each field's help names the paper's symbol."""

    sampler: str = knob(
        "ddim",
        "ddpm = ancestral, as published; ddim = eta 0; dpmpp = DPM-Solver++(2M), eta 0, second order multistep",
        choices=("ddpm", "ddim", "dpmpp"),
    )
    num_steps: int = knob(50, "number of sampling steps", symbol="T", flag="--steps")
    schedule_power: float = knob(
        1.0,
        "step schedule t_i = t_max (1 - i/T)^RHO (ddim, dpmpp): 1 = the model's spacing, > 1 more steps near the "
        "clean image, < 1 more near pure noise",
        symbol="rho",
        metavar="RHO",
    )
    guidance_weight: float = knob(
        0.1, "weight of the rescaled feature gradient added to eps", symbol="w_g", aliases=("--wg",)
    )
    recurrence: int = knob(2, "self-recurrence iterations per step (re-noise and repeat)", symbol="K", aliases=("-K",))
    early_recurrence: int = knob(
        2, "K for the first --early-steps steps (early step emphasis; reference 1000)", symbol="K_early"
    )
    early_steps: int = knob(
        0, "number of first steps with emphasis: T - T' in the paper (reference 5: t = 999..995)", metavar="N"
    )
    late_recurrence: int = knob(
        2, "K for the last --late-steps steps (refinement near the clean image; featscope's)", symbol="K_late"
    )
    late_steps: int = knob(0, "number of last steps with K_late (published: 0)", metavar="N")
    grad_clip: float | None = knob(
        3.0,
        "grad_thres: clamp the rescaled gradient to mean +- THR*std element-wise; <= 0 off; the reference preset "
        "takes the network's published threshold (2.0 for ViT-H/14, else 3.0)",
        symbol="thr",
        metavar="THR",
    )
    loss: str = knob("l2", "feature distance: squared L2 (published) or cosine", choices=("l2", "cosine"))
    prompt: str = knob("", "text prompt for the backbone (empty = unconditional, as published)", metavar="TEXT")
    guidance_scale: float = knob(1.0, "classifier-free guidance on the prompt (1 = off, one UNet call)", symbol="cfg")
    track_after_guidance: bool = knob(
        True, "also score the x0 estimate after the guided update for best-image tracking", cli=False
    )
    track_from: int = knob(
        0,
        "first sampling step whose guided x0 estimate is scored too (one network evaluation per iteration; "
        "negative: counted from the end, -1 = the last step); the estimates before the update are scored at "
        "every step (published: 0)",
        metavar="STEP",
    )
    clamp: bool = knob(
        True,
        "the network sees D(x0_hat) clamped to [0, 1] (straight-through; the reference preset does not clamp, as "
        "published)",
        cli=False,
    )
    stop_distance: float | None = knob(
        None, "stop early once every sample's best squared distance is at most D", metavar="D"
    )
    candidates: int = knob(
        1,
        "trajectories started per image; the nearest after --select-after steps goes on (published: 1)",
        metavar="N",
    )
    select_after: int = knob(0, "steps all candidates run before the nearest is kept", metavar="STEPS")
    resample_every: int = knob(
        0,
        "particles: every N steps before the selection, resample each image's candidates by the objective on "
        "their x0 estimates (weights exp(-d / (T mean d)), systematic resampling), so that compute goes to the "
        "promising ones (Feynman-Kac steering); copies part ways through the sampler's noise (ddpm) or "
        "recurrence (K > 1): with ddim or dpmpp and K = 1 they stay copies; 0 = the candidates run independently",
        metavar="N",
    )
    resample_temperature: float = knob(
        0.1, "particles: T, relative to each image's mean distance (smaller: greedier)", metavar="T"
    )
    backward_steps: int = knob(
        0,
        "backward guidance: Adam steps on each x0 estimate toward the target, one network evaluation each "
        "(universal guidance's m; published decoder: 0)",
        symbol="m",
    )
    backward_lr: float = knob(0.01, "Adam step size of backward guidance, in the backbone's x0 units", metavar="LR")
    backward_from: int = knob(
        0, "first sampling step with backward guidance (0 = the noisiest; -1 = the last)", metavar="STEP"
    )
    backward_blur: float = knob(
        0.0,
        "Gaussian blur sigma (x0 pixels) on the backward step's change: no speckle, low-frequency blotches "
        "instead (featscope's; published: 0)",
        metavar="SIGMA",
    )
    backward_sparsity: float = knob(
        0.0,
        "artifact penalty of backward guidance: an L1 proximal step after each Adam step, so that only elements "
        "whose gradient exceeds S times the sample's RMS gradient move (featscope's; published: 0)",
        metavar="S",
    )
    x0_weight: float = knob(
        0.0,
        "guidance on the clean estimate x0 (MPGD; TFG's mean guidance on x0): each inner step moves x0 by MU "
        "against the distance's gradient, normalised to unit RMS; no UNet backward pass; 0 = off",
        symbol="mu",
        metavar="MU",
    )
    x0_steps: int = knob(1, "inner iterations of the x0 guidance, one network evaluation each", symbol="N_iter")
    x0_from: int = knob(0, "first sampling step with x0 guidance (0 = the noisiest; -1 = the last)", metavar="STEP")
    patience: int = knob(
        0,
        "adaptive per-sample stopping: a sample stops once its best distance has not dropped by 1% for P "
        "sampling steps (its best image is its result); 0 = off",
        metavar="P",
    )

    def validate(self) -> None:
        checks = [
            (self.num_steps >= 1, "num_steps must be at least 1"),
            (self.sampler in ("ddpm", "ddim", "dpmpp"), f"sampler must be ddpm, ddim or dpmpp, not {self.sampler!r}"),
            (self.schedule_power > 0, "schedule_power (--schedule-power) must be > 0"),
            (
                self.schedule_power == 1 or self.sampler != "ddpm",
                "schedule_power (--schedule-power) needs --sampler ddim or dpmpp",
            ),
            (self.x0_weight >= 0 and self.x0_steps >= 1, "x0_weight must be >= 0 and x0_steps at least 1"),
            self.step_check("x0_from"),
            (self.patience >= 0, "patience (--patience) must be >= 0 (0 = off)"),
            self.step_check("track_from"),
            (self.patience == 0 or self.candidates == 1, "patience (--patience) needs a single candidate"),
            (
                min(self.recurrence, self.early_recurrence, self.late_recurrence) >= 1,
                "K (recurrence) must be at least 1",
            ),
            (self.early_steps >= 0 and self.late_steps >= 0, "early_steps and late_steps must be >= 0"),
            (self.guidance_weight >= 0, "guidance weight w_g must be >= 0"),
            (self.loss in ("l2", "cosine"), f"loss must be l2 or cosine, not {self.loss!r}"),
            (self.guidance_scale >= 1.0, "guidance_scale must be >= 1 (1 disables classifier-free guidance)"),
            (self.candidates >= 1, "candidates must be at least 1"),
            (self.resample_every >= 0, "resample_every (--resample-every) must be >= 0 (0 = off)"),
            (self.resample_temperature > 0, "resample_temperature (--resample-temperature) must be > 0"),
            (
                self.resample_every == 0 or self.candidates > 1,
                "resample_every (--resample-every) resamples candidates: pass --candidates 2 or more",
            ),
            (self.backward_steps >= 0, "backward_steps (--backward-steps, m) must be >= 0"),
            (self.backward_lr > 0, "backward_lr (--backward-lr) must be > 0"),
            (self.backward_blur >= 0, "backward_blur (--backward-blur) must be >= 0 (0 = no blur)"),
            (self.backward_sparsity >= 0, "backward_sparsity (--backward-sparsity) must be >= 0 (0 = off)"),
            self.step_check("backward_from"),
            (
                self.candidates == 1 or 1 <= self.select_after <= self.num_steps,
                f"with {self.candidates} candidates, pass select_after (--select-after) in 1..{self.num_steps}: "
                "the steps they run before the nearest is kept",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise FeatscopeError(message)

    def clip_threshold(self, published: list[float | None]) -> float:
        """thr: ``grad_clip``, or where it is None (the reference preset) the networks' ``published``
        thresholds (the smallest given), else the published default 3.0."""
        if self.grad_clip is not None:
            return self.grad_clip
        given = [value for value in published if value is not None]
        return min(given) if given else PUBLISHED_GRAD_CLIP

    def recurrence_at(self, step: int) -> int:
        """K at sampling step ``step`` (0 = the noisiest): early emphasis wins over late refinement."""
        if step < self.early_steps:
            return self.early_recurrence
        if step >= self.num_steps - self.late_steps:
            return self.late_recurrence
        return self.recurrence

    def rows_at(self, step: int) -> int:
        """Trajectories per image at sampling step ``step``: all candidates until the selection."""
        return self.candidates if step < self.select_after else 1

    def resamples_at(self, step: int) -> bool:
        """Whether the particles are resampled at sampling step ``step``, before its transition (every
        ``resample_every`` steps, before the selection's step)."""
        every = self.resample_every
        return every > 0 and self.candidates > 1 and (step + 1) % every == 0 and step + 1 < self.select_after

    def unguided(self) -> UniversalConfig:
        """The same sampler with every kind of guidance off (w_g 0, no backward or x0 steps): the baseline."""
        return replace(self, guidance_weight=0.0, backward_steps=0, x0_weight=0.0)

    def step_check(self, name: str) -> tuple[bool, str]:
        """A validation check that the step field ``name`` names a sampling step (negative: from the end)."""
        n, flag = self.num_steps, "--" + name.replace("_", "-")
        return -n <= getattr(self, name) < n, f"{name} ({flag}) must be a sampling step in 0..{n - 1} or -1..-{n}"

    def step_index(self, step: int) -> int:
        """A sampling step as given (``--backward-from`` etc.), negative ones counted from the end."""
        return step if step >= 0 else self.num_steps + step

    def backward_at(self, step: int) -> int:
        """Backward guidance steps (m) per iteration at sampling step ``step``."""
        return self.backward_steps if step >= self.step_index(self.backward_from) else 0

    def x0_at(self, step: int) -> int:
        """Inner steps of x0 guidance per iteration at sampling step ``step``."""
        return self.x0_steps if self.x0_weight > 0 and step >= self.step_index(self.x0_from) else 0

    def tracked_at(self, step: int) -> bool:
        """Whether each iteration at ``step`` scores the updated x0 estimate too (one more network pass)."""
        guided = self.guidance_weight > 0 or self.backward_at(step) > 0 or self.x0_at(step) > 0
        return self.track_after_guidance and guided and step >= self.step_index(self.track_from)

    def total_iterations(self) -> int:
        """Guided iterations per image, every candidate counted."""
        return sum(self.recurrence_at(i) * self.rows_at(i) for i in range(self.num_steps))

    def network_evaluations(self) -> int:
        """Network passes per image for a full run: one per iteration, one more after each guided update
        (best-image tracking), and ``backward_at`` per iteration for backward guidance."""
        return sum(
            self.recurrence_at(i) * self.rows_at(i) * (1 + self.tracked_at(i) + self.backward_at(i) + self.x0_at(i))
            for i in range(self.num_steps)
        )

    def unet_equivalents(self) -> int:
        """UNet cost per image for a full run in UNet-forward-equivalents: each iteration's forward pass (two with
        classifier-free guidance) and, with w_g > 0, its backward pass counted as two forwards. The decoder and
        the network under study are not included (``network_evaluations`` counts the network)."""
        calls = 1 if self.guidance_scale == 1.0 else 2
        return self.total_iterations() * calls * (1 + 2 * (self.guidance_weight > 0))


PUBLISHED_GRAD_CLIP = 3.0  # the published decoder's threshold for CLIP RN50 and ResNet-50

# DDIM with few steps; w_g 0.1 was calibrated on the embedded v-prediction world model, whose DDIM chains start
# at zero SNR (on world targets from its training pool: docs/speed.md).
_DDIM50 = UniversalConfig(sampler="ddim", num_steps=50, guidance_weight=0.1, recurrence=2, early_recurrence=2)
# The same chain on a step schedule t_i = 999 (1 - i/50)^1.5 (more steps near the clean image), chosen on the
# tuning split among 15 guided settings of the design space within 1% of reference's evaluations.
_WARPED50 = replace(_DDIM50, schedule_power=1.5)
# `fast`: that chain with its last step spent on backward guidance: K 1 there, the updated estimate scored there
# only, 159 Adam steps (lr 0.003) under the L1 artifact penalty (sparsity 1): 259 network evaluations, 1% of
# reference's. Chosen on the tuning split among 29 settings (benchmarks/records/decode-search/, docs/speed.md).
_FAST = replace(
    _WARPED50,
    late_recurrence=1,
    late_steps=1,
    track_from=-1,
    backward_steps=159,
    backward_lr=0.003,
    backward_from=-1,
    backward_sparsity=1.0,
)

PRESETS: dict[str, UniversalConfig] = {
    # The published setting: 1000-step DDPM, empty prompt, no CFG, K=1000 for t >= 995 then 8, w_g=4, thr 3
    # (2.0 for ViT-H/14: the network's published threshold), the decoded image unclamped.
    "reference": UniversalConfig(
        sampler="ddpm",
        num_steps=1000,
        guidance_weight=4.0,
        recurrence=8,
        early_recurrence=1000,
        early_steps=5,
        grad_clip=None,
        clamp=False,
    ),
    "fast": _FAST,
    "faster": replace(_DDIM50, num_steps=25),
    # Reference's distance at under 5% of its evaluations: the former `fast` chain (DDIM 50, K 2, w_g 0.1), then
    # backward guidance in the last 6 steps: 80 Adam steps at lr 0.003 on each x0 estimate (1,160 network
    # evaluations, 4.5% of reference's). Chosen on the embedded world (docs/speed.md): 0.32x reference's median
    # distance over 12 targets with world:shape-net, 0.63x over 6 with world:color-net, with visible background
    # artifacts; those targets came from world:ddpm's training pool (test-split numbers: docs/evaluation.md).
    "refine": replace(_DDIM50, backward_steps=80, backward_lr=0.003, backward_from=44),
}


def preset(name: str) -> UniversalConfig:
    """A named setting of the universal solver (``reference``, ``fast``, ``faster``, ``refine``)."""
    if name not in PRESETS:
        raise FeatscopeError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[name]


@dataclass(frozen=True)
class EndToEndConfig(Settings):
    """Settings of the end-to-end solver; the field defaults are the published ones (DiG-IN's OptimParams).

    A backbone family may register its own defaults (the world's are calibrated: see :func:`endtoend_defaults`).
    """

    num_steps: int = knob(20, "DDIM steps (eta 0) of the sampling chain", symbol="T", flag="--steps")
    guidance_scale: float = knob(3.0, "classifier-free guidance; 1 = conditional UNet call only", symbol="cfg")
    iterations: int = knob(20, "Adam steps; iterations + 1 images (iteration 0 = the plain sample)", symbol="iters")
    latent_lr: float = knob(
        1e-3, "learning rate of x_T (sgd_stepsize 0.01 x latent_lr_factor 0.1); 0 = fixed", metavar="LR"
    )
    cond_lr: float = knob(1e-2, "learning rate of the prompt-embedding delta; 0 = fixed", metavar="LR")
    uncond_lr: float = knob(
        1e-2, "learning rate of the unconditional (null-text) embedding delta; 0 = fixed", metavar="LR"
    )
    per_timestep_deltas: bool = knob(True, "one embedding delta per DDIM step (else one shared by all steps)")
    loss_steps: int = knob(3, "the loss is taken on the x0 predictions of the last N steps", metavar="N")
    loss_weighting: str = knob(
        "linear",
        "weights of those steps: linear (k / sum(1..n) for the k-th) or uniform",
        choices=("linear", "uniform"),
    )
    cutouts: int = knob(
        16, "augmented views (random crops + noise) per image in the gradient pass; 0 = none", metavar="N"
    )
    cut_power: float = knob(0.3, "crop side u^power * (max - min) + min with u ~ U(0, 1)", metavar="P")
    noise_sd: float = knob(0.005, "standard deviation of the Gaussian noise added to each view", metavar="SD")
    renormalize_latent: bool = knob(True, "re-project x_T to its initial L2 norm after each step")
    early_stop_loss: float | None = knob(
        None, "stop once every sample's (non-augmented) loss is below this", metavar="LOSS"
    )
    checkpointing: bool = knob(True, "recompute each DDIM step and the decoder in the backward pass (less memory)")

    def validate(self) -> None:
        checks = [
            (self.num_steps >= 1, "num_steps must be at least 1"),
            (self.guidance_scale >= 1.0, "guidance_scale must be >= 1 (1 disables classifier-free guidance)"),
            (self.iterations >= 0, "iterations must be >= 0"),
            (min(self.latent_lr, self.cond_lr, self.uncond_lr) >= 0, "learning rates must be >= 0"),
            (self.loss_steps >= 1, "loss_steps must be at least 1"),
            (self.loss_weighting in ("linear", "uniform"), f"loss_weighting must be linear or uniform, not "
             f"{self.loss_weighting!r}"),
            (self.cutouts >= 0 and self.noise_sd >= 0, "cutouts and noise_sd must be >= 0"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise FeatscopeError(message)

    def loss_weights(self) -> list[float]:
        """Weights of the loss on the last min(loss_steps, num_steps) x0 predictions, oldest first; they sum to 1."""
        n = min(self.loss_steps, self.num_steps)
        if self.loss_weighting == "uniform":
            return [1 / n] * n
        return [k / (n * (n + 1) / 2) for k in range(1, n + 1)]


def endtoend_defaults(backbone: str, method: str | None = None) -> EndToEndConfig:
    """The end-to-end solver's defaults on the backbone ``backbone`` (a spec) for ``method`` (e.g. ``"neuron"``):
    the published ones (Stable Diffusion and every built-in family), with the values its plugin family
    registered on top, for every method (``"endtoend"``) and then for this one (``"endtoend:METHOD"``): the
    world's calibrated learning rates and its neurons' 40 iterations (``featscope.world.plugin``)."""
    from featscope.registry import backbone_settings

    method_settings = backbone_settings(backbone, f"endtoend:{method}") if method else {}
    return EndToEndConfig().with_overrides(**{**backbone_settings(backbone, "endtoend"), **method_settings})


@dataclass(frozen=True)
class InnerSteps(Settings):
    """The inner loop of null-text inversion, a knob of every method that starts from a real image's inversion."""

    inner_steps: int = knob(10, "null-text inversion: optimisation steps of the null text per DDIM step",
                            metavar="N")  # fmt: skip

    def validate(self) -> None:
        super().validate()
        if self.inner_steps < 0:
            raise FeatscopeError("inner_steps must be at least 0")


@dataclass(frozen=True)
class NullTextConfig(InnerSteps):
    """Settings of a null-text inversion (DiG-IN §4): its DDIM chain, its guidance and its inner loop."""

    num_steps: int = knob(20, "DDIM steps of the inversion (and of the regeneration)", symbol="T", flag="--steps")
    guidance_scale: float = knob(3.0, "classifier-free guidance of the inversion and the regeneration (> 1)",
                                 symbol="cfg")  # fmt: skip

    def validate(self) -> None:
        super().validate()
        if self.num_steps < 1:
            raise FeatscopeError("num_steps must be at least 1")
        if self.guidance_scale <= 1.0:
            raise FeatscopeError(
                "null-text inversion fits the unconditional embedding of classifier-free guidance: use "
                "guidance_scale > 1"
            )


WORD_SWAP_TAUS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


@dataclass(frozen=True)
class WordSwapConfig(NullTextConfig):
    """Settings of word-swap counterfactuals: the inversion, the regeneration and the search over tau."""

    taus: tuple[float, ...] = knob(WORD_SWAP_TAUS, "fractions of the steps with the caption's cross-attention "
                                   "re-injected, searched per image", symbol="tau", flag="--taus", metavar="T,T",
                                   parse=comma_separated(float))  # fmt: skip
    flip: float = knob(0.5, "a result flips when the classifier's target-class probability is above this",
                       metavar="P")  # fmt: skip

    def validate(self) -> None:
        super().validate()
        if not (len(self.taus) >= 1 and all(0 <= t <= 1 for t in self.taus)):
            raise FeatscopeError("taus must be fractions in [0, 1]")
        if not 0 < self.flip < 1:
            raise FeatscopeError("flip must be a probability in (0, 1)")
