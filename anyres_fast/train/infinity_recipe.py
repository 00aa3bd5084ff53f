"""The InfinityGAN recipe for the shared Trainer (docs/infinitygan_training.md, docs/training.md).

Per step, as the published InfinityGAN trains:
1. D: softplus(-D(real)) + softplus(D(fake)) + 1 * [L1(aux(real), v_real) + L1(aux(fake), v_fake)] on
   the vertical coordinate; lazy R1 (gamma 10) on the reals every 16 steps, scaled by 16.
2. G: softplus(-D(fake)) + 1 * L1(aux(fake), v_fake) + 1 * diversity loss (angular, as the published
   configs; or L1) on the G_S outputs of pairs that share z_g and coordinates and differ in z_l; path
   length on the W+ styles every 4 steps on half the batch (weight 2, scaled by 4, decay 0.01).
3. G_ema: decay 0.5 ** (32 / 10000) per step.
Adam lr 0.002 with the lazy-regularisation ratios (G 4/5, D 16/17) applied to lr and betas (0, 0.99).
No augmentation of D's inputs: the published training has none (its DiffAugment serves only the
inversion code, test_managers/inversion.py). Style mixing with probability 0.9 (one crossover layer per chunk). Fakes' coordinates: the published
training sampling (`InfinityGenerator.training_coords`).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Optional

import torch

from ..data import ImageSource
from ..data.infinity import InfinityPatchDataset, full_size_for
from ..models import Discriminator
from ..models.infinity import InfinityConfig, InfinityGenerator
from ..utils.files import save_image
from . import infinity_losses as L
from .losses import r1_penalty
from .checkpoint import model_from_run
from .run_folder import resolve_in_run
from .trainer import Context, Recipe

PATCH_SIZES = (101, 197, 389)

# A configuration that trains on a 2-core CPU in minutes (29-pixel patches, narrow layers).
TINY_G = dict(patch_size=29, ts_input=11, z_dim=16, local_dim=8, ss_layers=2, ss_radius=1, mapping_layers=2,
              channel_base=64, channel_max=16)
TINY_D = dict(channel_base=256, channel_max=16, mapping_layers=2)


@dataclass
class InfinityTrainConfig:
    """Settings of an InfinityGAN run (stored in checkpoints).

    data: image folder or zip. patch: patch size p (101, 197 or 389; tiny: 29). full: training-image
    size F (None: 197 for 101, 389 for 197, 773 for 389). tiny: the small CPU configuration.
    g_kwargs / d_kwargs: InfinityConfig / Discriminator overrides. Loss weights, intervals, learning
    rate, EMA and mixing as published (defaults). diversity: "angular" (the published form, made
    NaN-safe) or "l1". mbstd_group: D's minibatch-std group (None: `published_mbstd_group(batch)`).
    """
    data: Optional[str] = None
    patch: int = 101
    full: Optional[int] = None
    tiny: bool = False
    g_kwargs: dict = field(default_factory=dict)
    d_kwargs: dict = field(default_factory=dict)
    cache_dir: Optional[str] = None
    lr: float = 0.002
    betas: tuple = (0.0, 0.99)
    r1_gamma: float = L.R1_GAMMA
    r1_every: int = L.R1_EVERY
    pl_weight: float = L.PL_WEIGHT
    pl_every: int = L.PL_EVERY
    pl_decay: float = L.PL_DECAY
    coord_weight: float = L.COORD_WEIGHT
    diversity_weight: float = L.DIVERSITY_WEIGHT
    diversity: str = "angular"       # "angular" (published configs) or "l1" (the L1-ratio form)
    mbstd_group: Optional[int] = None  # D's minibatch-std group; None: the published rule for the batch
    mixing_prob: float = L.MIXING_PROB
    ema_decay: float = 0.5 ** (32 / 10000)
    xflip: bool = True
    grid_seeds: int = 3
    panorama_width: int = 4          # snapshot panorama width in training patches


def published_mbstd_group(batch: int) -> int:
    """The minibatch-std group of the published InfinityGAN discriminator for a training batch.

    Its rule: the smallest divisor i of the batch with 4 <= i < floor(sqrt(batch)), else the batch
    itself. So batch 16 (the published configs) gives 16, one group over the whole batch, not 4; 32
    and 64 give 4; 4, 8, 12 and 24 give the batch. (D then uses min(group, samples per pass).)

    Args:
        batch: the training batch (config train_params.batch_size).

    Returns:
        The group size.
    """
    for i in range(4, int(math.sqrt(batch))):
        if batch % i == 0:
            return i
    return batch


def lazy_ratio(interval: int) -> float:
    """The lazy-regularisation factor interval / (interval + 1) applied to Adam's lr and betas
    (StyleGAN2 §B); 1 for a regulariser that is off (interval 0)."""
    return interval / (interval + 1) if interval > 0 else 1.0


def generator_config(cfg: InfinityTrainConfig) -> InfinityConfig:
    kw = dict(TINY_G) if cfg.tiny else {"patch_size": cfg.patch}
    kw.update(cfg.g_kwargs)
    return InfinityConfig(**kw)


def generator_from_run(run: str, which: str = "G_ema", map_location="cpu") -> InfinityGenerator:
    """The InfinityGenerator `which` (G_ema by default) of a run folder's newest checkpoint, eval mode, frozen.

    Raises:
        FileNotFoundError: no checkpoint. ValueError: not an InfinityGAN run.
    """
    return model_from_run(run, "infinity_generator", lambda cfg: InfinityGenerator(InfinityConfig.from_dict(cfg)),
                          which, map_location, "an InfinityGAN training")


class InfinityRecipe(Recipe):
    """Recipe for InfinityGAN; see the module docstring.

    Args:
        cfg: InfinityTrainConfig.

    Raises:
        ValueError: an unsupported patch size (without tiny or g_kwargs), missing data (in build).
    """

    def __init__(self, cfg: InfinityTrainConfig):
        if not cfg.tiny and "patch_size" not in cfg.g_kwargs and cfg.patch not in PATCH_SIZES:
            raise ValueError(f"patch must be one of {PATCH_SIZES}, got {cfg.patch}")
        self.cfg = cfg
        self.pl_mean = torch.zeros(())

    # -- build --------------------------------------------------------------------------------------
    def build(self, ctx: Context) -> None:
        cfg = self.cfg
        if not cfg.data:
            raise ValueError("InfinityGAN training needs --data (a folder or zip of images)")
        if cfg.diversity not in L.DIVERSITY_FORMS:
            raise ValueError(f"diversity must be one of {L.DIVERSITY_FORMS}, got {cfg.diversity!r}")
        self.gcfg = generator_config(cfg)
        p = self.gcfg.patch_size
        self.full = cfg.full or full_size_for(p)
        self.source = ImageSource(cfg.data, cache_dir=resolve_in_run(ctx.options.out, cfg.cache_dir), min_size=p)
        self._datasets = {"real": InfinityPatchDataset(self.source, p, self.full, xflip=cfg.xflip, seed=ctx.seed)}
        self.G = InfinityGenerator(self.gcfg).to(ctx.device)
        d_kw = dict(TINY_D) if cfg.tiny else {}
        d_kw.setdefault("mbstd_group_size", cfg.mbstd_group or published_mbstd_group(ctx.batch))
        d_kw.update(cfg.d_kwargs)
        self.D = Discriminator(p, aux_outputs=1, any_resolution=True, **d_kw).to(ctx.device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        g_ratio, d_ratio = lazy_ratio(cfg.pl_every), lazy_ratio(cfg.r1_every)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=cfg.lr * g_ratio,
                                      betas=tuple(b ** g_ratio for b in cfg.betas), eps=1e-8)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=cfg.lr * d_ratio,
                                      betas=tuple(b ** d_ratio for b in cfg.betas), eps=1e-8)
        self.pl_mean = torch.zeros((), device=ctx.device)

    def modules(self) -> dict:
        return {"G": self.G, "D": self.D, "G_ema": self.G_ema}

    def optimizers(self) -> dict:
        return {"G": self.opt_G, "D": self.opt_D}

    def datasets(self) -> dict:
        return dict(self._datasets)

    def state_dict(self) -> dict:
        return {"pl_mean": self.pl_mean.detach().cpu()}

    def load_state_dict(self, state: dict) -> None:
        if "pl_mean" in state:
            self.pl_mean = state["pl_mean"].to(self.pl_mean.device)

    def config(self) -> dict:
        d = dataclasses.asdict(self.cfg)
        d["betas"] = list(d["betas"])
        d["model"] = "infinity"
        if hasattr(self, "gcfg"):
            d["infinity_generator"] = self.gcfg.to_dict()
            d["full_size"] = self.full
        return d

    def data_report(self) -> dict:
        return {"real": self.source.report()}

    # -- fakes --------------------------------------------------------------------------------------
    def fake_inputs(self, ctx: Context, b: int, tag: str, chunk: int) -> dict:
        """Latents, coordinates, noise and mixed W+ styles for one chunk of b fakes (counter-based).

        z_g and coordinates are paired ([A, A, C, C, ...]) so pairs differ only in z_l (diversity loss).
        """
        G, cfg = self.G, self.gcfg
        zl = cfg.zl_size
        z_g = L.paired(ctx.randn((b, 2, cfg.z_dim), f"{tag}/z_g", chunk))
        z_l = ctx.randn((b, cfg.local_dim, zl, zl), f"{tag}/z_l", chunk)
        coords, label = G.training_coords(b, generator=ctx.generator(f"{tag}/coords", chunk))
        coords, label = L.paired(coords).to(ctx.device), L.paired(label).to(ctx.device)
        noises = [n.to(ctx.device) for n in G.make_noises(b, zl, generator=ctx.generator(f"{tag}/noise", chunk))]
        return {"z_g": z_g, "z_l": z_l, "coords": coords, "label": label, "noises": noises,
                "mix": ctx.generator(f"{tag}/mix", chunk)}

    def _styles(self, inp: dict) -> torch.Tensor:
        z_g = inp["z_g"]
        ws, _ = L.mix_styles(self.G.mapping(z_g[:, 0]), self.G.mapping(z_g[:, 1]), self.G.num_ws,
                             self.cfg.mixing_prob, generator=inp["mix"])
        return ws

    def _fake(self, inp: dict, ws: torch.Tensor):
        return self.G.synthesis(inp["z_g"][:, 0], inp["z_l"], ws, inp["coords"], inp["noises"],
                                return_structure=True)

    # -- one step -----------------------------------------------------------------------------------
    def train_step(self, ctx: Context, step: int) -> dict:
        cfg = self.cfg
        chunks = ctx.next_batch("real")
        stats = {}

        def add(key, value):
            stats[key] = stats.get(key, 0.0) + float(value) / len(chunks)

        # D: adversarial + coordinate regression on reals and fakes.
        self.G.requires_grad_(False)
        self.D.requires_grad_(True)
        for k, chunk in enumerate(chunks):
            real = chunk["image"]
            inp = self.fake_inputs(ctx, real.shape[0], "D", k)
            with torch.no_grad(), ctx.autocast():
                fake, _ = self._fake(inp, self._styles(inp))
            with ctx.autocast():
                real_logits, real_aux = self.D(real)
                fake_logits, fake_aux = self.D(fake.detach())
            adv = L.d_logistic_loss(real_logits.float(), fake_logits.float())
            c_real = L.coord_loss(real_aux.float(), chunk["coord_v"])
            c_fake = L.coord_loss(fake_aux.float(), inp["label"])
            loss = adv + cfg.coord_weight * (c_real + c_fake)
            (loss * ctx.chunk_weight).backward()
            add("D/loss", adv.item())
            add("D/coord_real", c_real.item())
            add("D/coord_fake", c_fake.item())
            add("D/real", real_logits.mean().item())
            add("D/fake", fake_logits.mean().item())
        ctx.step_optimizer("D", self.opt_D, list(self.D.parameters()))

        if cfg.r1_every > 0 and step % cfg.r1_every == 0:
            for k, chunk in enumerate(chunks):
                real = chunk["image"].detach().requires_grad_(True)
                logits, _ = self.D(real, force_fp32=True)
                pen = r1_penalty(real, logits).mean()
                (L.r1_loss(pen, cfg.r1_gamma, cfg.r1_every) * ctx.chunk_weight).backward()
                add("D/r1_penalty", pen.item())
            ctx.step_optimizer("Dreg", self.opt_D, list(self.D.parameters()))

        # G: adversarial + coordinate + diversity.
        self.D.requires_grad_(False)
        self.G.requires_grad_(True)
        for k, chunk in enumerate(chunks):
            inp = self.fake_inputs(ctx, chunk["image"].shape[0], "G", k)
            with ctx.autocast():
                fake, z_s = self._fake(inp, self._styles(inp))
                logits, aux = self.D(fake)
            adv = L.g_nonsaturating_loss(logits.float())
            c_fake = L.coord_loss(aux.float(), inp["label"])
            div = L.diversity(cfg.diversity, inp["z_l"], z_s.float()) if z_s.shape[0] >= 2 \
                else torch.zeros((), device=fake.device)
            loss = adv + cfg.coord_weight * c_fake + cfg.diversity_weight * div
            (loss * ctx.chunk_weight).backward()
            add("G/loss", adv.item())
            add("G/coord", c_fake.item())
            add("G/diversity", div.item())
        ctx.step_optimizer("G", self.opt_G, list(self.G.parameters()))

        if cfg.pl_every > 0 and cfg.pl_weight > 0 and step % cfg.pl_every == 0:
            # Every chunk's penalty uses the step's mean; the running mean moves by the mean of the
            # chunks' updates over all ranks (linear in the lengths, so one update with the whole
            # batch's mean length, the same on every rank and for any split).
            new_means = []
            for k, chunk in enumerate(chunks):
                b = max(1, chunk["image"].shape[0] // L.PL_BATCH_SHRINK)
                inp = self.fake_inputs(ctx, b, "PL", k)
                ws = self._styles(inp)
                fake, _ = self._fake(inp, ws)
                pen, new_mean, lengths = L.path_length_penalty(fake, ws, self.pl_mean, cfg.pl_decay,
                                                               generator=ctx.generator("PL/proj", k))
                (pen * cfg.pl_weight * cfg.pl_every * ctx.chunk_weight).backward()
                new_means.append(new_mean.detach())
                add("G/path_length", lengths.mean().item())
            self.pl_mean = ctx.mean_over_ranks_tensors([torch.stack(new_means).mean(0)])[0]
            ctx.step_optimizer("Greg", self.opt_G, list(self.G.parameters()))
        self.G.requires_grad_(False)
        self.update_ema()
        return stats

    @torch.no_grad()
    def update_ema(self) -> None:
        """G_ema <- lerp(G, G_ema, decay) (published decay 0.5 ** (32 / 10000) per step); buffers copied."""
        for pe, p in zip(self.G_ema.parameters(), self.G.parameters()):
            pe.copy_(p.detach().lerp(pe, self.cfg.ema_decay))
        for be, b in zip(self.G_ema.buffers(), self.G.buffers()):
            be.copy_(b)

    # -- snapshots ----------------------------------------------------------------------------------
    @torch.no_grad()
    def panorama(self, seed: int, width_patches: int, device=None) -> torch.Tensor:
        """One wide G_ema image (1, 3, patch, ~width_patches * patch) in one pass (padding-free)."""
        G, cfg = self.G_ema, self.gcfg
        g = torch.Generator().manual_seed(seed)
        n = cfg.ts_input
        step = 2 ** G.depth
        m = n + (width_patches - 1) * max(1, (G.patch_size + step - 1) // step)
        R = G.ss_margin
        z_g = torch.randn(1, cfg.z_dim, generator=g).to(device)
        z_l = torch.randn(1, cfg.local_dim, n + 2 * R, m + 2 * R, generator=g).to(device)
        noises = [x.to(device) for x in G.make_noises(1, (n + 2 * R, m + 2 * R), generator=g)]
        coords = G.centred_coords(1, n + 2 * R, m + 2 * R, device=device)
        return G.synthesis(z_g, z_l, G.mapping(z_g), coords, noises).float().cpu()

    def snapshot(self, ctx: Context, folder: str, step: int) -> None:
        """<folder>/step<N>.png: one wide panorama per grid seed, stacked (same seeds every snapshot)."""
        rows = [self.panorama(1000 + i, self.cfg.panorama_width, ctx.device) for i in range(self.cfg.grid_seeds)]
        save_image(os.path.join(folder, f"step{step:08d}.png"), torch.cat(rows, dim=2))
