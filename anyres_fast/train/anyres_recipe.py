"""The any-resolution GAN recipe: phase `fixed` (StyleGAN3-T/R at p) and phase `patch` (docs/training.md).

Phase fixed: StyleGAN3 training on the LR set: non-saturating logistic loss, lazy R1 every 16 steps
(gain 16; Adam lr and betas of D rescaled by 16/17), Adam beta (0, 0.99), G_ema with a half-life of
batch*10/32 kimg and a 5% ramp-up, magnitude EMA with beta 0.5^(batch/20k), x-flips.

Phase patch: G, G_ema and D start from a phase-1 run (the scale branch, absent in phase 1, starts at
zero so G is exactly the phase-1 generator); a frozen teacher (the phase-1 G_ema). Each step draws,
with probability 1/2, a batch of LR base images (identity transform) or HR patches (their (s, v));
fakes are generated at the reals' transforms. G's loss adds lambda * (masked L1 + masked LPIPS)
between the fake patch warped into the teacher frame and the teacher's image of the same latent.
R1 applies to whichever reals the step drew.

Both phases can augment every image D sees (reals and fakes, in G's loss, D's loss and R1) with ADA's
pipeline (`aug`: noaug by default as the any-resolution paper's runs, ada or fixed; train/augment.py).

Phase panorama (docs/panorama.md): phase fixed's recipe for a panorama generator (Chai et al. 2022,
supplement §6): each fake is a random viewing-angle slice of the 360-degree strip, and D sees the
cross-frame input: two adjacent slices (one frame apart) spliced at a random cut, so the boundaries
between frames must look like any other part of a photo.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from ..data import HRPatchDataset, ImageSource, LRDataset
from ..models import Discriminator, Generator, GeneratorConfig, perceptual
from ..utils.files import save_png, to_uint8
from . import losses
from .augment import AdaController, AugmentPipe
from .checkpoint import latest_checkpoint, load_checkpoint, model_from_run
from .run_folder import resolve_in_run
from .trainer import Context, Recipe

# A configuration that trains both phases on a 2-core CPU in minutes (quality is not the point).
TINY_G = dict(z_dim=16, w_dim=16, channel_base=512, channel_max=16, num_layers=6, scale_dim=16,
              mapping_width=16)
TINY_D = dict(channel_base=512, channel_max=16, mapping_layers=2)


@dataclass
class AnyresTrainConfig:
    """Settings of an any-resolution run (stored in checkpoints).

    phase: "fixed" or "patch". lr_data / hr_data: image folders or zips. teacher: phase-1 run folder
    (phase patch). resolution: p. config: "T" or "R". tiny: the small CPU configuration.
    g_kwargs / d_kwargs: extra Generator / Discriminator arguments. lpips: "alex" or "random".
    cache_dir: listing cache folder (a relative path is inside the run folder). Learning rates, betas, R1 gamma/interval, EMA, teacher lambda,
    patch probability and scale bounds as published (reference values in the defaults). blur_sigma /
    blur_fade_kimg: StyleGAN3's blur of D's inputs (stylegan3-r's schedule by default for config R in
    phase fixed; phase patch starts from a trained run, where StyleGAN3 also turns the blur off).
    aug: "noaug", "ada" (p adjusted towards aug_target) or "fixed" (p = aug_p); augpipe: the
    pipeline preset ("bgc"); aug_p: the fixed p, or ADA's initial p (None: 0.2 for fixed as
    StyleGAN3's --p, 0 for ada); ada_interval / ada_kimg: the published adjustment speed.
    """
    phase: str = "fixed"
    lr_data: Optional[str] = None
    hr_data: Optional[str] = None
    teacher: Optional[str] = None
    resolution: int = 256
    config: str = "T"
    tiny: bool = False
    g_kwargs: dict = field(default_factory=dict)
    d_kwargs: dict = field(default_factory=dict)
    lpips: str = "alex"
    cache_dir: Optional[str] = None
    lr_g: float = 0.0025
    lr_d: float = 0.002
    betas: tuple = (0.0, 0.99)
    r1_gamma: float = 2.0
    r1_interval: int = 16
    ema_kimg: Optional[float] = None      # None: batch * 10 / 32
    ema_rampup: Optional[float] = 0.05    # phase patch: None (off), as after a teacher init
    teacher_lambda: float = 5.0
    patch_probability: float = 0.5
    scale_max: float = 0.5
    scale_min: Optional[float] = None
    xflip: bool = True
    random_crop: bool = True
    min_size: Optional[int] = None        # smallest accepted short side (None: p/2 for LR, p for HR)
    grid_seeds: int = 4
    blur_sigma: Optional[float] = None    # D-input blur at the start; None: 10 for config R in phase fixed, else 0
    blur_fade_kimg: Optional[float] = None  # its linear fade to 0; None: batch * 200 / 32 (stylegan3-r)
    aug: str = "noaug"
    augpipe: str = "bgc"
    aug_target: float = 0.6
    aug_p: Optional[float] = None
    ada_interval: int = 4
    ada_kimg: float = 500.0
    fov: float = 60.0                     # phase panorama: degrees per frame


AnyresConfig = AnyresTrainConfig     # the name before it said what it configures


def generator_config(cfg: AnyresTrainConfig, batch: int, c_dim: int, scale_branch: bool) -> GeneratorConfig:
    kw = dict(TINY_G) if cfg.tiny else {}
    kw.update(cfg.g_kwargs)
    kw.setdefault("magnitude_ema_beta", 0.5 ** (batch / 20000))
    return GeneratorConfig(resolution=cfg.resolution, config=cfg.config, c_dim=c_dim, scale_branch=scale_branch,
                           **kw)


def discriminator_kwargs(cfg: AnyresTrainConfig) -> dict:
    kw = dict(TINY_D) if cfg.tiny else {}
    if not cfg.tiny and cfg.config == "R":
        kw.update(channel_base=32768)   # StyleGAN3 keeps D at SG2 width for both configs
    kw.update(cfg.d_kwargs)
    return kw


def load_run_modules(run: str, map_location="cpu") -> tuple:
    """(checkpoint dict, path) of a run folder's newest checkpoint. Raises FileNotFoundError."""
    path = latest_checkpoint(run)
    if path is None:
        raise FileNotFoundError(f"{run}: no checkpoint in {os.path.join(run, 'checkpoints')}")
    return load_checkpoint(path, map_location=map_location), path


def generator_from_run(run: str, which: str = "G_ema", map_location="cpu") -> Generator:
    """The generator `which` (G_ema by default) of a run folder's newest checkpoint, eval mode, frozen.

    Raises:
        FileNotFoundError: no checkpoint. ValueError: not an any-resolution run.
    """
    return model_from_run(run, "generator", lambda cfg: Generator(GeneratorConfig.from_dict(cfg)), which,
                          map_location, "an any-resolution training")


class AnyresRecipe(Recipe):
    """Recipe for the any-resolution generator; see the module docstring.

    Args:
        cfg: AnyresTrainConfig.

    Raises (in build):
        ValueError / FileNotFoundError: unusable data, a missing teacher run or a teacher of another
        configuration; perceptual.LPIPSWeightsMissing for phase patch without the backbone weights.
    """

    def __init__(self, cfg: AnyresTrainConfig):
        if cfg.phase not in ("fixed", "patch", "panorama"):
            raise ValueError(f"phase must be fixed, patch or panorama, got {cfg.phase!r}")
        if cfg.phase == "panorama" and not 0 < cfg.fov <= 360:
            raise ValueError(f"fov must be in (0, 360] degrees, got {cfg.fov:g}")
        if cfg.aug not in ("noaug", "ada", "fixed"):
            raise ValueError(f"aug must be noaug, ada or fixed, got {cfg.aug!r}")
        self.cfg = cfg
        self.teacher = None
        self.lpips_net = None

    # -- build --------------------------------------------------------------------------------------
    def _sources(self, ctx: Context):
        cfg, p = self.cfg, self.cfg.resolution
        cond = True   # labels are used when the source has a dataset.json
        cache_dir = resolve_in_run(ctx.options.out, cfg.cache_dir)
        lr = ImageSource(cfg.lr_data, cache_dir=cache_dir, min_size=cfg.min_size or max(8, p // 2),
                         use_labels=cond)
        hr = None
        if cfg.phase == "patch":
            if not cfg.hr_data:
                raise ValueError("phase patch needs --hr-data")
            hr = ImageSource(cfg.hr_data, cache_dir=cache_dir, min_size=max(cfg.min_size or 0, p),
                             use_labels=cond)
            if hr.c_dim != lr.c_dim:
                raise ValueError(f"labels: the LR set has {lr.c_dim} classes, the HR set {hr.c_dim}")
        return lr, hr

    def build(self, ctx: Context) -> None:
        cfg, p = self.cfg, self.cfg.resolution
        self.lr_source, self.hr_source = self._sources(ctx)
        self.c_dim = self.lr_source.c_dim
        self._datasets = {"lr": LRDataset(self.lr_source, p, random_crop=cfg.random_crop, xflip=cfg.xflip,
                                          seed=ctx.seed)}
        if self.hr_source is not None:
            self._datasets["hr"] = HRPatchDataset(self.hr_source, p, scale_max=cfg.scale_max, scale_min=cfg.scale_min,
                                                  random_crop=cfg.random_crop, xflip=cfg.xflip, seed=ctx.seed)
        patch = cfg.phase == "patch"
        self.gcfg = generator_config(cfg, ctx.batch, self.c_dim, scale_branch=patch)
        if patch and self._teacher_is_pickle():
            self.gcfg = self._student_config_for_pickle(ctx)
        if cfg.phase == "panorama":
            self.gcfg = dataclasses.replace(self.gcfg, panorama=True, fov=float(cfg.fov))
        self.G = Generator(self.gcfg).to(ctx.device)
        self.D = Discriminator(p, c_dim=self.c_dim, **discriminator_kwargs(cfg)).to(ctx.device)
        if patch and self._teacher_is_pickle() and os.path.isfile(cfg.teacher):
            # The pickle's own discriminator when it has one we support (its weights: _init_from_pickle,
            # or the checkpoint on resume).
            import copy
            from ..models.published import cached_network_pickle
            nets = cached_network_pickle(cfg.teacher)
            if nets.D is not None and nets.D.resolution == p and nets.D.c_dim == self.c_dim:
                self.D = copy.deepcopy(nets.D).train().requires_grad_(True).to(ctx.device)
                # Stored with the run's settings, so that a resume rebuilds this D without the pickle.
                self.cfg = dataclasses.replace(cfg, d_kwargs={k: v for k, v in nets.D_kwargs.items()
                                                              if k not in ("resolution", "c_dim")})
        self.G_ema = Generator(self.gcfg).to(ctx.device).eval()
        self.G_ema.load_state_dict(self.G.state_dict())
        self.G_ema.requires_grad_(False)
        if patch:
            self._init_from_teacher(ctx)
            self.lpips_net = perceptual.build_lpips(cfg.lpips, spatial=True, device=ctx.device)
        ratio = cfg.r1_interval / (cfg.r1_interval + 1)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=tuple(cfg.betas), eps=1e-8)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d * ratio,
                                      betas=tuple(b ** ratio for b in cfg.betas), eps=1e-8)
        self.ema_kimg = cfg.ema_kimg if cfg.ema_kimg is not None else ctx.batch * 10 / 32
        self.ema_rampup = None if patch else cfg.ema_rampup
        default_sigma = 10.0 if (cfg.config == "R" and not patch) else 0.0
        self.blur_init_sigma = float(cfg.blur_sigma if cfg.blur_sigma is not None else default_sigma)
        self.blur_fade_kimg = float(cfg.blur_fade_kimg if cfg.blur_fade_kimg is not None else ctx.batch * 200 / 32)
        self.augment_pipe, self.ada = None, None
        if cfg.aug != "noaug":
            self.augment_pipe = AugmentPipe.preset(cfg.augpipe)
            p0 = cfg.aug_p if cfg.aug_p is not None else (0.2 if cfg.aug == "fixed" else 0.0)
            self.ada = AdaController(target=cfg.aug_target if cfg.aug == "ada" else None, p=p0,
                                     interval=cfg.ada_interval, kimg=cfg.ada_kimg)

    def _teacher_is_pickle(self) -> bool:
        from ..models.published import is_network_pickle
        teacher = self.cfg.teacher
        return bool(teacher) and (is_network_pickle(teacher) or teacher.lower().endswith((".pkl", ".pickle")))

    def _student_config_for_pickle(self, ctx: Context) -> GeneratorConfig:
        """A published network pickle as the teacher: the run's generator is the teacher's architecture
        plus a scale branch (ours unless the teacher has anyres-gan's), with this run's magnitude EMA beta.
        On resume the generator config stored in the checkpoint is used as it is."""
        resume = latest_checkpoint(ctx.options.out) if ctx.options.resume else None
        if resume is not None:
            stored = load_checkpoint(resume)["config"].get("generator")
            if stored is not None:
                return GeneratorConfig.from_dict(stored)
        from ..models.published import cached_network_pickle
        tcfg = cached_network_pickle(self.cfg.teacher).config
        where = f"--teacher {self.cfg.teacher}"
        if tcfg.resolution != self.cfg.resolution:
            raise ValueError(f"{where}: a {tcfg.resolution}-pixel generator, but this run trains at "
                             f"{self.cfg.resolution} (pass --resolution {tcfg.resolution})")
        if tcfg.c_dim != self.c_dim:
            raise ValueError(f"{where}: the teacher has {tcfg.c_dim} classes, the data {self.c_dim}")
        return dataclasses.replace(tcfg, scale_branch=True, magnitude_ema_beta=self.gcfg.magnitude_ema_beta)

    def _init_from_pickle(self, ctx: Context) -> None:
        import copy
        from ..models.published import cached_network_pickle
        nets = cached_network_pickle(self.cfg.teacher)
        self.tcfg = nets.config
        self.teacher = copy.deepcopy(nets.G_ema).to(ctx.device).eval().requires_grad_(False)
        for target, source in ((self.G, nets.G or nets.G_ema), (self.G_ema, nets.G_ema)):
            missing, unexpected = target.load_state_dict(source.state_dict(), strict=False)
            bad = [k for k in missing if not (k.startswith("scale_mapping.") or ".scale_affine." in k)]
            if bad or unexpected:
                raise ValueError(f"--teacher {self.cfg.teacher}: weights do not match ({bad[:3]} {unexpected[:3]})")
        self.G_ema.requires_grad_(False)
        self.teacher_path = self.cfg.teacher

    def _init_from_teacher(self, ctx: Context) -> None:
        resume = latest_checkpoint(ctx.options.out) if ctx.options.resume else None
        if resume is not None:
            # Resuming: the teacher's weights are in this run's checkpoint (restored by the Trainer),
            # so the teacher run folder is not needed; only its configuration is read here.
            tcfg = load_checkpoint(resume)["config"].get("teacher_generator")
            if tcfg is not None:
                self.tcfg = GeneratorConfig.from_dict(tcfg)
                self.teacher = Generator(self.tcfg).to(ctx.device).eval().requires_grad_(False)
                return
        if not self.cfg.teacher:
            raise ValueError("phase patch needs --teacher (a phase-1 run folder)")
        if self._teacher_is_pickle():
            return self._init_from_pickle(ctx)
        state, path = load_run_modules(self.cfg.teacher, map_location="cpu")
        tcfg = state.get("config", {}).get("generator")
        if tcfg is None:
            raise ValueError(f"--teacher {self.cfg.teacher}: {path} is not an any-resolution run")
        tcfg = GeneratorConfig.from_dict(tcfg)
        mine = dataclasses.replace(self.gcfg, scale_branch=tcfg.scale_branch, magnitude_ema_beta=tcfg.magnitude_ema_beta)
        if mine != tcfg:
            diff = {k: (v, getattr(mine, k)) for k, v in tcfg.to_dict().items() if getattr(mine, k) != v}
            raise ValueError(f"--teacher {self.cfg.teacher}: its generator differs from this run's: {diff} "
                             f"(teacher, this run)")
        self.tcfg = tcfg
        self.teacher = Generator(tcfg).to(ctx.device).eval()
        self.teacher.load_state_dict(state["modules"]["G_ema"])
        self.teacher.requires_grad_(False)
        for target, name in ((self.G, "G"), (self.G_ema, "G_ema")):
            missing, unexpected = target.load_state_dict(state["modules"][name], strict=False)
            bad = [k for k in missing if not (k.startswith("scale_mapping.") or ".scale_affine." in k)]
            if bad or unexpected:
                raise ValueError(f"--teacher {self.cfg.teacher}: weights do not match ({bad[:3]} {unexpected[:3]})")
        self.D.load_state_dict(state["modules"]["D"])
        self.G_ema.requires_grad_(False)
        self.teacher_path = path

    # -- Recipe interface ---------------------------------------------------------------------------
    def modules(self) -> dict:
        mods = {"G": self.G, "D": self.D, "G_ema": self.G_ema}
        if self.teacher is not None:
            mods["teacher"] = self.teacher
        return mods

    def optimizers(self) -> dict:
        return {"G": self.opt_G, "D": self.opt_D}

    def state_dict(self) -> dict:
        return {"ada": self.ada.state_dict()} if self.ada is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.ada is not None and "ada" in state:
            self.ada.load_state_dict(state["ada"])

    def datasets(self) -> dict:
        return dict(self._datasets)

    def config(self) -> dict:
        d = dataclasses.asdict(self.cfg)
        d["betas"] = list(d["betas"])
        if hasattr(self, "gcfg"):
            d["generator"] = self.gcfg.to_dict()
            d["c_dim"] = self.c_dim
        if getattr(self, "tcfg", None) is not None:
            d["teacher_generator"] = self.tcfg.to_dict()
        return d

    def data_report(self) -> dict:
        rep = {"lr": self.lr_source.report()}
        if self.hr_source is not None:
            rep["hr"] = self.hr_source.report()
        return rep

    # -- losses (one chunk each; also used by the tests) --------------------------------------------
    @staticmethod
    def frame(chunk: dict) -> dict:
        """Generator keyword arguments placing fakes at the reals' transforms (identity for LR images)."""
        if "canvas" in chunk:
            return {"canvas": chunk["canvas"], "box": chunk["box"]}
        return {}

    def _c(self, chunk):
        return chunk["c"] if self.c_dim > 0 else None

    def _fake_c(self, chunk):
        """The fakes' labels: chunk["fake_c"] (drawn from the dataset by train_step) or, for direct
        calls without it, the reals' labels."""
        if self.c_dim == 0:
            return None
        return chunk.get("fake_c", chunk["c"])

    def fake_labels(self, ctx: Context, kind: str, n: int, tag: str, chunk: int) -> torch.Tensor:
        """Labels of n fakes drawn as StyleGAN2/3 draw them: the label of a uniformly random image of
        the dataset (so the fakes follow the dataset's label distribution), counter-based.

        Args:
            ctx: the run's Context. kind: "lr" or "hr" (whose images' labels). n: how many.
            tag: names the draw (one per phase). chunk: chunk index.

        Returns:
            (n, c_dim) float32 tensor on ctx.device.
        """
        source = self.hr_source if kind == "hr" else self.lr_source
        idx = torch.randint(len(source), (n,), generator=ctx.generator(f"fake_c/{tag}", chunk))
        return torch.from_numpy(np.stack([source.label(int(i)) for i in idx])).to(ctx.device)

    blur_sigma = 0.0       # the current step's D-input blur (set by train_step)
    augment_pipe = None    # AugmentPipe when cfg.aug is ada or fixed (set by build)
    ada = None             # its AdaController (p)

    def d_input(self, img: torch.Tensor, rng: Optional[torch.Generator] = None) -> torch.Tensor:
        """What D sees: the images blurred by the current step's sigma (config R's early blur), then
        augmented at the current p (StyleGAN3's order: blur, augment, D).

        Args:
            img: (B, C, H, W) reals or fakes. rng: the augmentation's random numbers (None: torch's
                global RNG; training passes `aug_generator`'s counter-based ones).
        """
        img = losses.blur_images(img, self.blur_sigma) if self.blur_sigma > 0 else img
        if self.augment_pipe is not None:
            img = self.augment_pipe(img, self.ada.p, generator=rng)
        return img

    def aug_generator(self, ctx: Optional[Context], tag: str, chunk: dict) -> Optional[torch.Generator]:
        """The augmentation's generator for one D pass of one chunk: counter-based (seed, step, tag,
        global chunk index; train_step stores the index as chunk["chunk_index"]), so a resumed run and
        any number of processes (at the same --batch-gpu) draw the same; None without ctx or augmentation."""
        if ctx is None or self.augment_pipe is None:
            return None
        return ctx.generator(f"aug/{tag}", int(chunk.get("chunk_index", 0)))

    def fake_images(self, z: torch.Tensor, c, chunk: dict, update_emas: bool = False) -> torch.Tensor:
        """The fakes D sees for one chunk: G at the reals' transforms, or in phase panorama the
        cross-frame input at the chunk's "pano_crop" / "pano_splice" draws (panorama_draws)."""
        if self.cfg.phase == "panorama":
            return cross_frame_fakes(self.G, z, c, chunk["pano_crop"], chunk["pano_splice"], update_emas=update_emas)
        return self.G(z, c, update_emas=update_emas, **self.frame(chunk))

    def panorama_draws(self, ctx: Context, tag: str, k: int, n: int) -> dict:
        """Per-sample crop starts (input columns in [0, turn)) and splice points ([0, p]) of chunk k,
        counter-based like every other draw (the same on resume and for any process count)."""
        turn = self.G.synthesis.input.turn_samples
        g = ctx.generator(f"pano/{tag}", k)
        crop = torch.randint(turn, (n,), generator=g)
        splice = torch.randint(self.cfg.resolution + 1, (n,), generator=g)
        return {"pano_crop": crop.to(ctx.device), "pano_splice": splice.to(ctx.device)}

    def loss_G(self, chunk: dict, z: torch.Tensor, ctx: Optional[Context] = None) -> tuple:
        """Per-sample generator loss (B,) and stats for one chunk of reals (their transforms) and latents z."""
        c = c_fake = self._fake_c(chunk)
        with ctx.autocast() if ctx else _null():
            fake = self.fake_images(z, c_fake, chunk)
            logits = self.D(self.d_input(fake, self.aug_generator(ctx, "G", chunk)), c_fake)
        loss = losses.g_nonsaturating(_loss_dtype(logits))
        stats = {"G/loss_adv": loss.mean().item()}
        if self.teacher is not None and self.cfg.teacher_lambda > 0:
            with torch.no_grad():
                t_img = self.teacher(z, c)
            # host copies when train_step kept them (no device-to-host copy per step, docs/ops.md §3.2)
            n = chunk.get("canvas_host", chunk.get("canvas"))
            box = chunk.get("box_host", chunk.get("box"))
            n = torch.full((z.shape[0],), float(self.cfg.resolution)) if n is None else n
            box = torch.zeros(z.shape[0], 2) if box is None else box
            tl = losses.teacher_loss(fake, n, box, t_img, self.lpips_net)
            loss = loss + self.cfg.teacher_lambda * (tl["l1"] + tl["lpips"])
            stats.update({"G/teacher_l1": tl["l1"].mean().item(), "G/teacher_lpips": tl["lpips"].mean().item()})
        stats["G/loss_total"] = loss.mean().item()
        return loss, stats

    def loss_Dmain(self, chunk: dict, z: torch.Tensor, ctx: Optional[Context] = None) -> tuple:
        """Per-sample logistic D loss (B,) for one chunk; G's EMAs (w_avg, magnitudes) are updated here;
        ADA observes the real logits."""
        c, c_fake = self._c(chunk), self._fake_c(chunk)
        with torch.no_grad(), (ctx.autocast() if ctx else _null()):
            fake = self.fake_images(z, c_fake, chunk, update_emas=True)
        with ctx.autocast() if ctx else _null():
            fake_logits = self.D(self.d_input(fake, self.aug_generator(ctx, "Dfake", chunk)), c_fake)
            real_logits = self.D(self.d_input(chunk["image"], self.aug_generator(ctx, "Dreal", chunk)), c)
        if self.ada is not None:
            self.ada.observe(real_logits)
        loss = losses.d_logistic(_loss_dtype(real_logits), _loss_dtype(fake_logits))
        return loss, {"D/loss": loss.mean().item(), "D/real": real_logits.mean().item(),
                      "D/fake": fake_logits.mean().item()}

    def loss_Dreg(self, chunk: dict, ctx: Optional[Context] = None) -> tuple:
        """Per-sample lazy R1 loss (B,): |grad D(x)|^2 * gamma/2 * interval (fp32), the gradient
        w.r.t. the reals before augmentation (as StyleGAN3); ADA observes the logits."""
        real = chunk["image"].detach().requires_grad_(True)
        logits = self.D(self.d_input(real, self.aug_generator(ctx, "Dr1", chunk)), self._c(chunk), force_fp32=True)
        if self.ada is not None:
            self.ada.observe(logits)
        pen = losses.r1_penalty(real, logits)
        loss = pen * (self.cfg.r1_gamma / 2) * self.cfg.r1_interval
        return loss, {"D/r1_penalty": pen.mean().item()}

    # -- one step -----------------------------------------------------------------------------------
    def train_step(self, ctx: Context, step: int) -> dict:
        kind = "lr"
        if self.cfg.phase == "patch" and ctx.uniform("batch_kind") < self.cfg.patch_probability:
            kind = "hr"
        # canvas/box also on the host: the teacher warp's box checks and table widths read them there
        chunks = [dict(ch, chunk_index=k) for k, ch in enumerate(ctx.next_batch(kind, host_keys=("canvas", "box")))]
        if self.c_dim > 0:       # one label draw per phase, as the published loop draws one per phase
            chunks_g = [dict(ch, fake_c=self.fake_labels(ctx, kind, ch["image"].shape[0], "G", k))
                        for k, ch in enumerate(chunks)]
            chunks_d = [dict(ch, fake_c=self.fake_labels(ctx, kind, ch["image"].shape[0], "D", k))
                        for k, ch in enumerate(chunks)]
        else:
            chunks_g = chunks_d = chunks
        if self.cfg.phase == "panorama":
            chunks_g = [dict(ch, **self.panorama_draws(ctx, "G", k, ch["image"].shape[0])) for k, ch in enumerate(chunks_g)]
            chunks_d = [dict(ch, **self.panorama_draws(ctx, "D", k, ch["image"].shape[0])) for k, ch in enumerate(chunks_d)]
        stats = {"patch_batch": float(kind == "hr")}
        if self.ada is not None:
            stats["Progress/augment"] = self.ada.p      # the p of this step
        self.blur_sigma = losses.blur_sigma_at(ctx.nimg, self.blur_init_sigma, self.blur_fade_kimg)
        if self.blur_init_sigma > 0:
            stats["D/blur_sigma"] = self.blur_sigma
        zd = self.gcfg.z_dim

        def run(phase, params, opt, fn, chunks=chunks):
            acc = {}
            for k, chunk in enumerate(chunks):
                loss, st = fn(k, chunk)
                (loss.mean() * ctx.chunk_weight).backward()
                for key, v in st.items():
                    acc[key] = acc.get(key, 0.0) + v / len(chunks)
            ctx.step_optimizer(phase, opt, params)
            stats.update(acc)

        self.G.requires_grad_(True)
        self.D.requires_grad_(False)
        run("G", list(self.G.parameters()), self.opt_G,
            lambda k, ch: self.loss_G(ch, ctx.randn((ch["image"].shape[0], zd), "z_G", k), ctx), chunks_g)
        self.G.requires_grad_(False)
        self.D.requires_grad_(True)
        # G's running statistics (magnitude EMAs, w_avg) move in the D pass. Every chunk starts from the
        # step's initial values and the step keeps the mean of the chunks' updates over all ranks: the
        # update is linear in the batch statistic, so this is one update with the global batch's
        # statistic, the same for any split into processes and chunks, and ranks never drift apart.
        emas = [b for n, b in self.G.named_buffers() if n.endswith("magnitude_ema") or n.endswith("w_avg")]
        start = [b.clone() for b in emas]
        total = [torch.zeros_like(b) for b in emas]

        def dmain(k, ch):
            for b, s0 in zip(emas, start):
                b.copy_(s0)
            out = self.loss_Dmain(ch, ctx.randn((ch["image"].shape[0], zd), "z_D", k), ctx)
            for t, b in zip(total, emas):
                t += b
            return out

        run("D", list(self.D.parameters()), self.opt_D, dmain, chunks_d)
        for b, t in zip(emas, ctx.mean_over_ranks_tensors([t / len(chunks) for t in total])):
            b.copy_(t)
        if step % self.cfg.r1_interval == 0:
            run("Dreg", list(self.D.parameters()), self.opt_D, lambda k, ch: self.loss_Dreg(ch, ctx))
        self.D.requires_grad_(False)
        self.update_ema(ctx.nimg, ctx.batch)
        if self.ada is not None:
            self.ada.end_step(ctx, step)
        if self.cfg.phase == "patch" and kind == "hr":
            s = chunks[0]["s"]
            stats.update({"scale/min_s": float(s.min()), "scale/max_s": float(s.max())})
            red = torch.cat([ch["reduction"] for ch in chunks]).float()
            # data/fast_decode: share of the patches decoded by the fast path (docs/data.md)
            stats.update({"data/fast_decode": float((red > 0).float().mean()),
                          "data/max_reduction": float(red.max()),
                          "data/prepared": float(torch.cat([ch["prepared"] for ch in chunks]).float().mean())})
        return stats

    @torch.no_grad()
    def update_ema(self, nimg: int, batch: int) -> None:
        """G_ema <- lerp(G, G_ema, beta) with StyleGAN3's half-life and ramp-up; buffers copied."""
        ema_nimg = self.ema_kimg * 1000
        if self.ema_rampup is not None:
            ema_nimg = min(ema_nimg, nimg * self.ema_rampup)
        beta = 0.5 ** (batch / max(ema_nimg, 1e-8))
        for pe, p in zip(self.G_ema.parameters(), self.G.parameters()):
            pe.copy_(p.detach().lerp(pe, beta))
        for be, b in zip(self.G_ema.buffers(), self.G.buffers()):
            be.copy_(b)

    # -- snapshots ----------------------------------------------------------------------------------
    @torch.no_grad()
    def snapshot(self, ctx: Context, folder: str, step: int) -> None:
        """PNGs: G_ema's base images for fixed seeds; in phase patch the same seeds at canvas 2p and 4p
        (downsized to p for the grid) and the centre p x p patch of each canvas at native pixels."""
        G, p, n = self.G_ema, self.cfg.resolution, self.cfg.grid_seeds
        z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(123)).to(ctx.device)
        c = None
        if self.c_dim > 0:
            c = torch.eye(self.c_dim, device=ctx.device)[torch.arange(n) % self.c_dim]
        if self.cfg.phase == "panorama":      # one 360-degree strip per seed
            strips = G.render_panorama(z, c=c, tile_batch=4, progress=False)
            save_grid(strips.unsqueeze(1), os.path.join(folder, f"step{step:08d}.png"))
            return
        rows = [G(z, c).float().cpu()]
        if self.cfg.phase == "patch":
            from .. import ops
            for size in (2 * p, 4 * p):
                canvas = G.render(z, size, c=c, tile_batch=4, progress=False)
                rows.append(ops.lanczos_resample(canvas, (p, p)))
                rows.append(canvas[..., size // 2 - p // 2:size // 2 + p // 2, size // 2 - p // 2:size // 2 + p // 2])
        save_grid(torch.stack(rows), os.path.join(folder, f"step{step:08d}.png"))


def published_crop_box(crop: torch.Tensor, resolution: int, rate: int) -> torch.Tensor:
    """Strip pixel x0 (at height p) of the published 360 input's crop start `crop` (input columns):
    (crop - 1/2) p / rate (docs/panorama.md §1)."""
    return (crop.to(torch.float64) - 0.5) * (resolution / rate)


def cross_frame_fakes(G, z: torch.Tensor, c, crop: torch.Tensor, splice: torch.Tensor,
                      update_emas: bool = False) -> torch.Tensor:
    """The published cross-frame discriminator input (anyres-gan loss.py, its 360 branch): the slice at
    crop start `crop` and the next one, one frame (p pixels, fov degrees) further, side by side; D sees
    the p columns from `splice`. Both slices come from one synthesis pass with the same w.

    Args:
        G: a panorama Generator. z: (B, z_dim). c: (B, c_dim) labels or None.
        crop: (B,) int crop starts in input columns, [0, turn). splice: (B,) ints in [0, p].
        update_emas: as Generator.forward (training's D pass).

    Returns:
        (B, C, p, p) images: columns [0, p - splice) from the first slice, the rest from the second.
    """
    p, b = G.img_resolution, z.shape[0]
    ws = G.mapping(z, c, update_emas=update_emas, check_inputs=G.check_inputs)
    x0 = published_crop_box(crop, p, G.synthesis.input.sampling_rate).to(z.device)
    boxes = torch.stack([torch.cat([x0, x0 + p]), torch.zeros(2 * b, dtype=x0.dtype, device=x0.device)], dim=1)
    cc = None if c is None else torch.cat([c, c])
    both = G.synthesize(torch.cat([ws, ws]), canvas=p, box=boxes, update_emas=update_emas, c=cc)
    pair = torch.cat([both[:b], both[b:]], dim=3)                       # (B, C, p, 2p)
    cols = splice.to(z.device).view(b, 1, 1, 1) + torch.arange(p, device=z.device).view(1, 1, 1, p)
    return torch.gather(pair, 3, cols.expand(b, pair.shape[1], p, p))


def save_grid(images: torch.Tensor, path: str) -> str:
    """(rows, cols, C, H, W) float images in [-1, 1] -> one PNG (written atomically)."""
    r, k, ch, h, w = images.shape
    a = to_uint8(images).permute(0, 3, 1, 4, 2).reshape(r * h, k * w, ch)
    return save_png(path, a.numpy())


def _loss_dtype(x: torch.Tensor) -> torch.Tensor:
    """Logits for the loss: half precision raised to float32, float64 kept (side-by-side checks)."""
    return x if x.dtype == torch.float64 else x.float()


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False
