"""The sections of the preset table, one per stage, and the `Preset` that nests them (types only, no values).

* stage 1 — `SceneAETrainConfig` (beside the model's `SceneAEConfig`);
* stage 2 — `LatentAETrainConfig` (beside `LatentAEConfig`), and `LatentPreset`, the stage-2 view of a preset;
* stage 3 — `LDMTrainConfig` per level, and `LDMPreset`: the three denoisers, their schedule and training;
* stage 4 — `PriorTrainConfig`, and `PriorPreset`: the SDS prior and its training;
* evaluation — `CriticTrainConfig`, and `CriticPreset`: the perception critic of ``nfldm eval`` and its training.

The training sections derive from `nfldm_training.configs.base.TrainConfig` (the settings every stage shares) and
redeclare a shared field only where the stage's default differs or the field counts the stage's own items. The
values live in the one table, `nfldm_training.configs.presets.PRESETS`; this module imports nothing of it, so the
table and its stage views (`nfldm_training.configs.latent`, `.ldm`, `.prior`) import the types from here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from nfldm_sdk.models.critic import CriticConfig
from nfldm_sdk.models.denoisers import CDenoiserConfig, FDenoiserConfig, GDenoiserConfig
from nfldm_sdk.models.latent_ae import LatentAEConfig
from nfldm_sdk.models.prior_unet import PriorConfig
from nfldm_sdk.models.scene_ae import SceneAEConfig
from nfldm_sdk.models.noise_schedule import SamplerDefaults
from nfldm_sdk.models.noise_schedule import NoiseSchedule
from nfldm_training.configs.base import TrainConfig

__all__ = ["SceneAETrainConfig", "LatentAETrainConfig", "LDMTrainConfig", "PriorTrainConfig", "CriticTrainConfig",
           "LatentPreset", "LDMPreset", "PriorPreset", "CriticPreset", "Preset", "LEVELS"]

#: The denoiser levels of stage 3, coarsest first.
LEVELS = ("g", "c", "f")


@dataclass
class SceneAETrainConfig(TrainConfig):
    """Stage-1 training settings (`nfldm_training.modules.scene_ae`, `nfldm_training.data.capture_windows`).

    The image size is not repeated here: training uses ``Preset.scene_ae.image_size``. ``seed`` seeds the weights,
    the data order and the view hold-out.
    """

    batch_size: int = 2
    """Scene windows per optimisation step (per device)."""
    val_fraction: float = 0.2
    """Fraction of each store's episodes held out for validation (by episode, deterministic; at least one when a
    store has two or more episodes)."""
    window: int = 2
    """Consecutive frames per scene window (one training item); the scene frame is the ego frame at the
    window's anchor, its middle frame ``start + (window - 1) // 2``."""
    stride: int = 1
    """Frames between the first frames of consecutive windows of an episode."""
    cameras: tuple[str, ...] | None = None
    """Rig cameras used per frame (names); None = all cameras of the store's rig."""
    target_holdout: int = 0
    """Views per window held out of the encoder input and used only as render targets (chosen at random with a
    seeded generator each step). 0: every view is both an encoder input and a target."""
    image_loss: str = "l1"
    """Image reconstruction loss: ``"l1"`` or ``"l2"``."""
    ssim_weight: float = 0.0
    """w of the image loss's structural term, ``(1 − w) · error + w · (1 − SSIM)`` (`nfldm_training.modules.losses.
    image_loss`); 0 = the per-pixel error alone. The shipped decoder fine-tune uses 0.5 with ``image_loss="l1"``
    (model card)."""
    image_weight: float = 1.0
    """Weight of the image loss."""
    depth_loss: str = "l1"
    """Depth loss on valid pixels within [near, far]: ``"l1"`` (metres) or ``"inverse"`` (L1 on near/depth)."""
    depth_weight: float = 0.02
    """Weight of the depth loss (with ``"l1"`` the loss is in metres: 0.02 makes 1 m error count like 0.02 of
    mean absolute colour error)."""
    semantic_weight: float = 0.02
    """Weight of the semantic cross-entropy against the captured tags (models with a semantic head; sky pixels
    included, which also teaches the field to stay empty there). Measured on the tiny preset (100 steps): 0.02 keeps
    the PSNR gain of training without it (+2.8 dB vs +2.3 dB without semantics); 0.05 and 0.1 cost depth AbsRel and
    PSNR; a 10× learning rate for the head alone doubled the mIoU after 100 steps but cost 1.4 dB."""
    semantic_balance: float = 0.0
    """Class-balancing exponent of the semantic cross-entropy: a class of ``n_k`` supervised pixels in the batch
    weighs ``n_k^(−semantic_balance)`` per pixel (`nfldm_training.modules.label_losses.balanced_weights`; 0 = every
    pixel alike). The shipped label-decoder fine-tune uses 0.5 (model card)."""
    occupancy_weight: float = 0.0
    """Weight of the frustum occupancy loss (`nfldm_training.modules.losses.occupancy_loss`): every input view's
    per-bin ray-termination distribution against the bin of the captured depth (or "escape" on sky rays). 0 = off."""
    opacity_weight: float = 0.0
    """Weight of the rendered-opacity loss (`nfldm_training.modules.losses.opacity_loss`): opacity 1 where the
    captured surface is in the box, 0 along sky / free rays. 0 = off."""
    render_views: int | None = None
    """Target views rendered and supervised per window each step, drawn at random (seeded by step) from the targets;
    the encoder still sees every input view. None = render every target (rendering and decoding dominate a CPU
    step). Validation always renders every view."""
    channels_last: bool = False
    """Run the image encoder and decoder convolutions in channels-last memory layout (faster on CPU)."""
    val_batches: int | None = None
    """Validation batches per validation (None = the whole validation split)."""
    cache_windows: bool = False
    """Keep decoded scene windows in memory after their first read (small stores only)."""
    trainable: str = "all"
    """What the optimiser updates: ``"all"``, ``"decoder"`` — only the 2D image decoder after the render, with the
    encoder and the semantic head frozen, so the voxel fields, their labels and every later stage trained on them
    stay valid (a fine-tune of a trained model: `train_scene_ae`'s ``init_from``); only the image loss is trained
    then (depth, opacity and labels come from the frozen field) — or ``"labels"``: only the label decoder
    (`nfldm_sdk.models.scene_ae.LabelDecoder`, ``scene_ae.label_decoder_widths``), on the semantic cross-entropy,
    everything else frozen (a source without a label decoder gets a new one that starts at the field's labels)."""
    lae_input_fraction: float = 0.0
    """With ``trainable="decoder"`` or ``"labels"`` and a latent auto-encoder given to `train_scene_ae`: the fraction
    of training scenes whose field is replaced by its LAE reconstruction V̂ before rendering, so the decoder also learns the
    fields that generation produces (drawn per scene with the step's seeded generator)."""

    def __post_init__(self):
        super().__post_init__()
        if not (0.0 <= self.ssim_weight <= 1.0):
            raise ValueError(f"scene_ae_train.ssim_weight must be in [0, 1], got {self.ssim_weight}")
        if self.trainable not in ("all", "decoder", "labels"):
            raise ValueError(f"scene_ae_train.trainable {self.trainable!r}: use 'all', 'decoder' or 'labels'")
        if self.semantic_balance < 0:
            raise ValueError(f"scene_ae_train.semantic_balance must be >= 0, got {self.semantic_balance}")
        if not (0.0 <= self.lae_input_fraction <= 1.0):
            raise ValueError(f"scene_ae_train.lae_input_fraction must be in [0, 1], got {self.lae_input_fraction}")
        if self.lae_input_fraction > 0 and self.trainable == "all":
            raise ValueError("scene_ae_train.lae_input_fraction needs trainable='decoder' or 'labels' (the LAE was "
                             "trained on the frozen encoder's fields)")


@dataclass
class LatentAETrainConfig(TrainConfig):
    """Stage-2 training settings (`nfldm_training.modules.latent_ae`, `nfldm_training.data.latent_scenes`).

    Scene windows (frames, cameras, image size) are those the voxel store was encoded from (its root attrs); the
    KL weight and commitment β live in the model config (``latent_ae.kl_weight``, ``latent_ae.commitment_beta``).
    ``seed`` seeds the weights, the data order, g's noise and the rendered-view draw.
    """

    batch_size: int = 2
    """Scenes per optimisation step (per device)."""
    val_fraction: float = 0.2
    """Fraction of each capture store's episodes held out for validation (the stage-1 split rule,
    `nfldm_training.data.capture_windows.SceneWindowDataset`)."""
    voxel_loss: str = "l1"
    """Voxel reconstruction ‖V − V̂‖ of the features (and of the density when `density_loss` is None): ``"l1"``
    (mean absolute error) or ``"l2"`` (mean squared error)."""
    density_loss: str | None = "l2"
    """``"l1"`` or ``"l2"`` for the density part of the voxel loss (None: `voxel_loss`). L2 of ``log(σ + ε)``: the
    rare surface voxels are off by several units of log density while the LAE has not found them, and the square
    makes them count (overfitting two scenes: 75 % of their mean σ recovered in 600 steps, L1 0 %)."""
    density_weight: float = 1.0
    """Weight of the density part of the voxel loss (σ in 1/m)."""
    density_log_eps: float = 1e-3
    """ε (1/m): the voxel loss compares densities as ``log(σ + ε)``; 0 compares σ itself. Why log space (a loss on σ
    left the LAE decoding fog): `nfldm_training.modules.latent_ae`."""
    feature_weight: float = 1.0
    """Weight of the feature part of the voxel loss."""
    image_loss: str = "l1"
    """Image reconstruction ‖i − r(V̂, κ)‖ through the frozen stage-1 decoder: ``"l1"`` or ``"l2"``."""
    image_weight: float = 1.0
    """Weight of the image loss (0 trains on voxels only; the renders are then skipped in training)."""
    render_views: int | None = None
    """Views per window rendered for the image loss, drawn at random each step with a seeded generator
    (None = all views of the window). Validation renders every view."""
    sample_g: bool = True
    """Sample g with the reparameterisation trick in training (False: use the posterior mean)."""
    voxel_label_weight: float = 0.0
    """Weight of the class-balanced cross-entropy of the frozen semantic head on V̂'s features against its labels of
    V, on V's solid voxels (`nfldm_training.modules.label_losses`; 0: off; needs a stage-1 semantic head)."""
    bev_label_weight: float = 0.0
    """Weight of the class-balanced NLL of V's top-down (BEV) labels under V̂'s top-down class distribution (what
    ``NeuralScene.bev()`` and the layout figures read; 0: off; needs a stage-1 semantic head)."""
    label_balance_power: float = 0.5
    """Class balancing of both label losses: a class of n elements in the batch weighs ``n^(−power)`` each."""
    val_batches: int | None = None
    """Validation batches per validation (None = the whole validation split)."""


@dataclass
class LDMTrainConfig(TrainConfig):
    """Training of one level's denoiser (`nfldm_training.modules.ldm`). ``seed`` seeds the weights, the data order,
    the noise and the timesteps."""

    batch_size: int = 32
    """Scenes per optimisation step (per device)."""
    lr: float = 2e-4
    """AdamW learning rate (constant after a linear warm-up)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    val_fraction: float = 0.2
    """Fraction of each capture store's episodes held out (stage 1's rule and default fraction, so the denoisers never
    train on the episodes stage 1, the LAE and `nfldm eval` hold out); single-episode stores: every k-th scene."""
    val_interval: int = 200
    """Optimisation steps between validations (and checkpoints)."""
    ema_decay: float = 0.999
    """Decay of the exponential moving average of the weights (the EMA weights are what gets saved). The
    effective decay warms up as ``min(ema_decay, (1 + n) / (10 + n))`` after n updates, so short runs still
    move away from the initial weights."""
    loss_weighting: str = "none"
    """``"none"``: plain ``‖v̂ − v‖²`` (the usual v-prediction loss; on x_0 it is the weight ``SNR_t + 1``);
    ``"min_snr"``: Min-SNR-γ weighting for v-prediction (Hang et al. 2023), ``min(SNR_t, γ) / (SNR_t + 1)`` per
    sample, which caps the weight of nearly clean timesteps (but gives ~0 weight to the noisiest ones with a
    zero-terminal-SNR schedule). The paper's ``w(λ_t)`` is not given; plain v-MSE is our default."""
    snr_gamma: float = 5.0
    """γ of the Min-SNR weighting."""


@dataclass
class PriorTrainConfig(TrainConfig):
    """Training of the prior (`nfldm_training.modules.prior`). ``seed`` seeds the weights, the data order, the noise,
    the timesteps, the condition dropout and the generated artifact scenes."""

    batch_size: int = 32
    """Images per optimisation step (per device)."""
    lr: float = 2e-4
    """AdamW learning rate (constant after a linear warm-up)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_steps: int = 2000
    """Optimisation steps (total, across resumes)."""
    val_fraction: float = 0.05
    """Fraction of each class's images held out for the validation loss (every k-th image)."""
    val_interval: int = 500
    """Optimisation steps between validations (and checkpoints)."""
    ema_decay: float = 0.999
    """Decay of the EMA of the weights (what gets saved); warms up as ``min(decay, (1+n)/(10+n))``."""
    cond_dropout: float = 0.1
    """Fraction of training images whose class is replaced by the null class (classifier-free guidance needs the
    unconditional model)."""
    artifact_fraction: float = 0.5
    """Expected fraction of each batch drawn from the artifact images (balanced sampling with replacement: there are
    usually far fewer renders than captured images)."""
    artifact_scenes: int = 16
    """Scenes generated from the bundle whose renders are the artifact images."""
    artifact_views: int = 8
    """Views rendered per generated scene, from the SDS camera distribution (`nfldm_sdk.cameras.builders.sample_sds_cameras`)."""
    generate_steps: int = 25
    """Sampler steps per level when generating those scenes."""
    frame_stride: int = 1
    """Use every k-th captured frame (consecutive frames are nearly identical)."""

    def __post_init__(self):
        super().__post_init__()
        if not (0.0 <= self.cond_dropout < 1.0):
            raise ValueError(f"cond_dropout must be in [0, 1), got {self.cond_dropout}")
        if not (0.0 <= self.artifact_fraction <= 1.0):
            raise ValueError(f"artifact_fraction must be in [0, 1], got {self.artifact_fraction}")


@dataclass
class CriticTrainConfig(TrainConfig):
    """Training of the perception critic (`nfldm_training.modules.critic`) on captured views and their tags.

    The episode split is stage 1's (`nfldm_training.data.capture_windows.held_out_episodes` with `val_fraction`):
    the critic trains on the training episodes only, so its figures on held-out episodes are held-out figures.
    ``seed`` seeds the weights, the data order and the flips.
    """

    batch_size: int = 16
    """Captured views (one camera image each) per optimisation step (per device)."""
    val_fraction: float = 0.2
    """Fraction of each store's episodes held out (keep stage 1's value: the same episodes stay held out)."""
    cameras: tuple[str, ...] | None = None
    """Rig cameras whose images are used (names); None = all cameras of the store's rig."""
    frame_stride: int = 1
    """Use every k-th captured frame (consecutive frames are nearly identical)."""
    flip: float = 0.5
    """Probability that a training view (image and labels) is mirrored left-right."""
    val_batches: int | None = None
    """Validation batches per validation (None = the whole validation split)."""
    cache_views: bool = False
    """Keep decoded views in memory after their first read (small stores only)."""

    def __post_init__(self):
        super().__post_init__()
        if not (0.0 <= self.flip <= 1.0):
            raise ValueError(f"flip is a probability in [0, 1], got {self.flip}")
        if self.frame_stride < 1:
            raise ValueError(f"frame_stride must be >= 1, got {self.frame_stride}")


@dataclass
class CriticPreset:
    """The perception critic of ``nfldm eval``: its network and its training."""

    critic: CriticConfig = field(default_factory=CriticConfig)
    """The segmentation network (training image size, widths, class set)."""
    train: CriticTrainConfig = field(default_factory=CriticTrainConfig)
    """Its training."""


@dataclass
class LatentPreset:
    """The stage-2 view of a preset: its name and its two stage-2 sections (what `nfldm train latent-ae` trains)."""

    name: str = "custom"
    """Preset name (``tiny``, ``small``, ``paper``) or ``custom``."""
    description: str = ""
    """One line: what the preset is for."""
    latent_ae: LatentAEConfig = field(default_factory=LatentAEConfig)
    """Stage 2 model: the latent voxel auto-encoder."""
    latent_ae_train: LatentAETrainConfig = field(default_factory=LatentAETrainConfig)
    """Stage 2 training."""


@dataclass
class LDMPreset:
    """Stage 3: the three denoisers, their noise schedule, their training and the sampler defaults."""

    denoiser_g: GDenoiserConfig = field(default_factory=GDenoiserConfig)
    """ψ_g network sizes (``g_dim`` is filled in from the latents)."""
    denoiser_c: CDenoiserConfig = field(default_factory=CDenoiserConfig)
    """ψ_c network sizes (``latent_shape``, ``g_dim`` filled in from the latents)."""
    denoiser_f: FDenoiserConfig = field(default_factory=FDenoiserConfig)
    """ψ_f network sizes (``latent_shape``, ``c_shape``, ``g_dim`` filled in from the latents)."""
    schedule: NoiseSchedule = field(default_factory=NoiseSchedule)
    """Forward process (T = 1000, cosine, v-prediction) shared by the three levels."""
    train_g: LDMTrainConfig = field(default_factory=LDMTrainConfig)
    """Training of ψ_g."""
    train_c: LDMTrainConfig = field(default_factory=LDMTrainConfig)
    """Training of ψ_c."""
    train_f: LDMTrainConfig = field(default_factory=LDMTrainConfig)
    """Training of ψ_f."""
    sampler: SamplerDefaults = field(default_factory=SamplerDefaults)
    """Sampler defaults written into model bundles."""

    def train_config(self, level: str) -> LDMTrainConfig:
        """The training section of `level` (``"g"``, ``"c"`` or ``"f"``)."""
        if level not in LEVELS:
            raise KeyError(f"unknown level {level!r}: choose g, c or f")
        return getattr(self, f"train_{level}")

    def denoiser_config(self, level: str):
        """The denoiser config of `level`."""
        if level not in LEVELS:
            raise KeyError(f"unknown level {level!r}: choose g, c or f")
        return getattr(self, f"denoiser_{level}")


@dataclass
class PriorPreset:
    """Stage 4: the prior network and its training."""

    prior: PriorConfig = field(default_factory=PriorConfig)
    """The U-Net (image size, channels, noise schedule: v-prediction)."""
    train: PriorTrainConfig = field(default_factory=PriorTrainConfig)
    """Its training."""


@dataclass
class Preset:
    """Everything one named configuration fixes: a section per stage."""

    name: str = "custom"
    """Preset name (``tiny``, ``small``, ``paper``) or ``custom``."""
    description: str = ""
    """One line: what the preset is for."""
    scene_ae: SceneAEConfig = field(default_factory=SceneAEConfig)
    """Stage 1 model: the scene auto-encoder."""
    scene_ae_train: SceneAETrainConfig = field(default_factory=SceneAETrainConfig)
    """Stage 1 training."""
    latent_ae: LatentAEConfig = field(default_factory=LatentAEConfig)
    """Stage 2 model: the latent voxel auto-encoder (grid, channels and box equal ``scene_ae``'s)."""
    latent_ae_train: LatentAETrainConfig = field(default_factory=LatentAETrainConfig)
    """Stage 2 training."""
    ldm: LDMPreset = field(default_factory=LDMPreset)
    """Stage 3: the three denoisers, their noise schedule, training and sampler defaults."""
    prior: PriorPreset = field(default_factory=PriorPreset)
    """Stage 4: the SDS prior and its training."""
    critic: CriticPreset = field(default_factory=CriticPreset)
    """Evaluation: the perception critic of ``nfldm eval`` and its training."""

    def latent_view(self) -> LatentPreset:
        """The stage-2 view of this preset (its name, description and stage-2 sections, not copied)."""
        return LatentPreset(name=self.name, description=self.description, latent_ae=self.latent_ae,
                            latent_ae_train=self.latent_ae_train)
