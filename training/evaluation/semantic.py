"""The semantic figures of ``nfldm eval``: the semantic field against captured tags, and the perception critic's
label agreement and critic Fréchet distance (CFD).

**Reconstruction semantics** (bundles whose stage 1 has a semantic head), on the held-out windows of the
reconstruction figures, every view: each field (stage 1's, and stage 1 + LAE's) is rendered with the user-facing
label rule — ``SceneAutoEncoder.decode(..., min_hit_alpha=HIT_ALPHA)``, then
`nfldm_sdk.labels.semantic_field.labels_from_probabilities` with ``hit = isfinite(depth)`` (a pixel without a hit is
sky) — and its classes are compared with the captured tags mapped to the head's classes: mIoU and per-class IoU over
the classes present in the captures (`nfldm_training.metrics.semantic`), beside the majority-class baseline mIoU of
the same pixels (the chance level).

**Perception critic** (`nfldm_sdk.models.critic.PerceptionCritic`, from the bundle's ``critic/`` part or
``--critic``; trained on the captured training episodes, so held-out captures are new to it):

* *label agreement* — mIoU of the critic's labels on a render's RGB against the semantic field's own labels of the
  same render (the field's labels are the targets, both in the critic's classes): do the images show what the field
  says is there? For the generated scenes of the generation figures (each rendered at its reference rig) and for
  the stage-1 reconstructions of the held-out windows. Needs a semantic head;
* its *ceiling* — the critic's mIoU on the captured held-out images against the captured tags: the agreement a
  perfect renderer of real scenes would get;
* *CFD* (`nfldm_training.metrics.cfd.critic_frechet_distance`) between the critic features of the captured held-out
  anchor views and of the generated renders, and its *ceiling*: captured training-episode views against the same
  captured held-out views. All three sets have the same number of images (the smallest of the three, spread evenly),
  because the Fréchet distance of small sets is biased upwards by their size.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.labels.classes import SemanticClasses
from nfldm_sdk.labels.semantic_field import labels_from_probabilities
from nfldm_sdk.models.critic import CRITIC_PART, CriticUnavailableError, PerceptionCritic, load_critic_part
from nfldm_sdk.models.scene_ae import SceneAutoEncoder
from nfldm_sdk.models.semantic_head import SemanticsUnavailableError, require_semantic_head
from nfldm_sdk.persistence import resolve_model_dir
from nfldm_sdk.rendering.api import HIT_ALPHA
from nfldm_training.data.capture_views import CaptureViewDataset
from nfldm_training.metrics.cfd import critic_frechet_distance
from nfldm_training.metrics.semantic import confusion_matrix, majority_baseline_miou, mean_iou, per_class_iou

__all__ = ["IoUFigures", "SemanticEvaluation", "SemanticFigures", "iou_figures", "load_eval_critic", "semantic_markdown",
           "spread_indices"]

#: What the critic lines say when there is no critic.
NO_CRITIC = ("no perception critic: the model is not a bundle folder (which could hold a critic/ part) and no critic "
             "was given; pass EvalConfig.critic (--critic RUN), a run of `nfldm train critic STORE ... --out RUN`")


@dataclass
class IoUFigures:
    """IoU figures of predicted against target classes (classes of one `SemanticClasses` set).

    Attributes:
        miou: mIoU over the classes present in the targets.
        majority_miou: mIoU of predicting the targets' most frequent class everywhere (same pixels).
        class_iou: class name -> IoU, classes present in the targets only.
        pixels: pixels compared.
        images: images compared.
    """

    miou: float
    majority_miou: float
    class_iou: dict
    pixels: int
    images: int


@dataclass
class SemanticFigures:
    """The semantic figures of one evaluation (module docstring); a None figure comes with its note saying why."""

    stage1: IoUFigures | None = None
    """Stage-1 reconstructions' labels against the captured tags (held-out windows)."""
    stage1_lae: IoUFigures | None = None
    """Stage 1 + LAE reconstructions' labels against the captured tags."""
    reconstruction_note: str = ""
    """``"unavailable: <why>"`` when the reconstruction figures are absent, else empty."""
    critic: str = ""
    """Where the critic came from (its folder), or ``"unavailable: <why>"``."""
    critic_captured: IoUFigures | None = None
    """Ceiling of the label agreement: the critic on captured held-out images against the captured tags."""
    agreement_generated: IoUFigures | None = None
    """Label agreement of the generated scenes' renders (critic on RGB vs the field's labels)."""
    agreement_stage1: IoUFigures | None = None
    """Label agreement of the stage-1 reconstructions of the held-out windows."""
    agreement_note: str = ""
    """``"unavailable: <why>"`` when the label-agreement figures are absent, else empty."""
    cfd: float | None = None
    """Critic Fréchet distance, captured held-out anchor views vs generated renders."""
    cfd_ceiling: float | None = None
    """Critic Fréchet distance, captured training-episode views vs the same captured held-out views."""
    cfd_images: int = 0
    """Images per set of both CFDs."""
    cfd_note: str = ""
    """What the CFDs were computed on, or ``"unavailable: <why>"``."""
    classes: dict = field(default_factory=dict)
    """``{"head": [...], "critic": [...]}``: the class names each figure's classes refer to."""
    sky_no_hit_stage1: float | None = None
    """Fraction of the captured sky pixels (no captured hit) whose stage-1 reconstruction has no hit either (depth
    ``inf`` at `HIT_ALPHA`); None when the held-out views saw no sky."""
    sky_no_hit_lae: float | None = None
    """The same for the stage 1 + LAE reconstructions."""


def iou_figures(confusion: torch.Tensor, classes: SemanticClasses, images: int) -> IoUFigures:
    """`IoUFigures` of a ``[K, K]`` confusion matrix (rows target) over `classes`."""
    iou = per_class_iou(confusion)
    return IoUFigures(miou=mean_iou(confusion), majority_miou=majority_baseline_miou(confusion),
                      class_iou={n: float(v) for n, v in zip(classes.names, iou.tolist()) if v == v},
                      pixels=int(confusion.sum()), images=int(images))


def load_eval_critic(model, critic_path: str | None, device) -> tuple[PerceptionCritic | None, str]:
    """The critic of an evaluation and where it came from: `critic_path` (a ``nfldm train critic`` run or its model
    folder) when given, else the ``critic/`` part of the bundle `model` (a path) when it has one; else
    ``(None, "unavailable: <why>")``.

    Raises:
        `nfldm_sdk.persistence.ModelNotFoundError`: `critic_path` holds no saved network.
        `nfldm_sdk.models.bundle.BundleError`: the bundle's critic part is broken (changed, unreadable, wrong class).
    """
    if critic_path:
        folder = resolve_model_dir(critic_path)
        return PerceptionCritic.from_pretrained(folder, device=device), str(folder)
    if isinstance(model, (str, Path)):
        try:
            return load_critic_part(model, device=device), str(Path(model) / CRITIC_PART)
        except CriticUnavailableError as e:
            return None, f"unavailable: {e}, or pass --critic RUN"
    return None, f"unavailable: {NO_CRITIC}"


def _head_classes(ae: SceneAutoEncoder) -> tuple[SemanticClasses | None, str]:
    """The head's classes, or None and the one "semantics are unavailable" message."""
    try:
        require_semantic_head(ae.semantic_head)
    except SemanticsUnavailableError as e:
        return None, f"unavailable: {e}"
    return ae.config.classes, ""


def _lut(classes: SemanticClasses, device) -> torch.Tensor:
    return torch.as_tensor(classes.tag_to_class, device=device)


class SemanticEvaluation:
    """Accumulates the semantic figures while `nfldm_training.evaluation.evaluate` runs (module docstring).

    `observe_reconstruction` is called for every reconstructed batch of held-out windows, `observe_generation`
    once with the generated scenes; `figures` then returns the `SemanticFigures`.

    Args:
        scene_ae: the bundle's stage 1 (its semantic head, if any, labels the fields).
        critic: the perception critic, or None.
        critic_source: where the critic came from, or ``"unavailable: <why>"``.
        device: where rendering and the critic run.
    """

    def __init__(self, scene_ae: SceneAutoEncoder, critic: PerceptionCritic | None, critic_source: str, device):
        self.ae, self.critic, self.device = scene_ae, critic, device
        self.head, self.head_note = _head_classes(scene_ae)
        self.figs = SemanticFigures(reconstruction_note=self.head_note, critic=critic_source)
        self.figs.classes = {"head": list(self.head.names) if self.head else [],
                             "critic": list(critic.classes.names) if critic is not None else []}
        K = self.head.num_classes if self.head else 1
        Kc = critic.classes.num_classes if critic is not None else 1
        self.recon = {key: torch.zeros(K, K, dtype=torch.float64) for key in ("s1", "lae")}
        self.captured = torch.zeros(Kc, Kc, dtype=torch.float64)
        self.agree = {key: torch.zeros(Kc, Kc, dtype=torch.float64) for key in ("s1", "generated")}
        self.counts = {"recon": 0, "captured": 0, "s1": 0, "generated": 0}
        self.sky = {key: [0, 0] for key in ("s1", "lae")}            # [captured sky pixels rendered no-hit, all]

    # ------------------------------------------------------------------------------------------ renders
    def _labelled_render(self, field_: VoxelField, cameras: Cameras
                         ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """``(rgb [N, 3, H, W], tags [N, H, W] or None without a head, hit [N, H, W])`` of batched fields at
        cameras ``[B, R]`` by the user-facing rule (a hit: opacity ≥ `HIT_ALPHA`)."""
        out = self.ae.decode(field_, cameras, min_hit_alpha=HIT_ALPHA)
        hit = torch.isfinite(out.depth)
        tags = labels_from_probabilities(out.semantic, hit, self.head)[0].flatten(0, 1) if self.head is not None else None
        return out.rgb.flatten(0, 1), tags, hit.flatten(0, 1)

    def _critic_confusion(self, images: torch.Tensor, target_tags: torch.Tensor) -> torch.Tensor:
        """Confusion of the critic's classes on ``images [N, 3, H, W]`` against ``target_tags [N, H, W]``."""
        classes = self.critic.classes
        pred = self.critic.predict_classes(images.to(self.device))
        target = _lut(classes, pred.device)[target_tags.to(pred.device).long()]
        return confusion_matrix(pred, target, classes.num_classes).cpu()

    @torch.no_grad()
    def observe_reconstruction(self, key: str, field_: VoxelField, cameras: Cameras, batch) -> None:
        """One reconstructed batch: `key` ``"s1"`` (stage 1) or ``"lae"`` (stage 1 + LAE), its fields (batched),
        the cameras ``[B, V]`` and the `SceneBatch` of captured views it reconstructs."""
        n = batch.images.shape[0] * batch.images.shape[1]
        rgb, tags, hit = self._labelled_render(field_, cameras)
        sky = ~torch.isfinite(batch.depth.flatten(0, 1)).to(hit.device)
        self.sky[key][0] += int((sky & ~hit).sum())
        self.sky[key][1] += int(sky.sum())
        if self.head is not None:
            lut = _lut(self.head, tags.device)
            self.recon[key] += confusion_matrix(lut[tags.long()], lut[batch.semantic.flatten(0, 1).long()],
                                                self.head.num_classes).cpu()
            if key == "s1":
                self.counts["recon"] += n
        if self.critic is None or key != "s1":
            return
        self.captured += self._critic_confusion(batch.images.flatten(0, 1), batch.semantic.flatten(0, 1))
        self.counts["captured"] += n
        if tags is not None:
            self.agree["s1"] += self._critic_confusion(rgb, tags)
            self.counts["s1"] += n

    @torch.no_grad()
    def observe_generation(self, scenes: Sequence, rigs: Sequence[Cameras], captured_rgb: Sequence[torch.Tensor],
                           stores: Sequence[str], image_size: tuple[int, int], val_fraction: float,
                           cameras: Sequence[str] | None) -> None:
        """The generated scenes (scene k rendered at ``rigs[k % len(rigs)]``, `Cameras` ``[V]``), the captured
        held-out anchor views (``[V, 3, H, W]`` per reference window) and where the training-episode views of the
        CFD ceiling come from (the stores, split and cameras of the evaluation)."""
        if self.critic is None:
            self.figs.agreement_note = self.figs.cfd_note = self.figs.critic
            return
        renders = []
        for k, scene in enumerate(scenes):
            cams = rigs[k % len(rigs)].to(device=self.device).reshape(1, -1)
            f = VoxelField.stack([scene.field.to(device=self.device, dtype=torch.float32)])
            rgb, tags, _ = self._labelled_render(f, cams)
            if tags is not None:
                self.agree["generated"] += self._critic_confusion(rgb, tags)
                self.counts["generated"] += len(rgb)
            renders.append(rgb.cpu())
        generated, captured = torch.cat(renders), torch.cat(list(captured_rgb))
        train = CaptureViewDataset(stores, image_size, "train", val_fraction, cameras)
        n = min(len(generated), len(captured), len(train))
        if n < 2:
            self.figs.cfd_note = (f"unavailable: the critic Fréchet distance needs 2+ images per set, got {len(generated)} "
                                  f"generated, {len(captured)} captured held-out and {len(train)} training-episode views")
            return
        feats = lambda images: torch.cat([self.critic.features(x.to(self.device)).cpu()  # noqa: E731
                                          for x in images.split(32)]).double().numpy()
        f_gen, f_cap = feats(generated[spread_indices(len(generated), n)]), feats(captured[spread_indices(len(captured), n)])
        f_train = feats(train.images(spread_indices(len(train), n)))
        self.figs.cfd = critic_frechet_distance(f_cap, f_gen)
        self.figs.cfd_ceiling = critic_frechet_distance(f_train, f_cap)
        self.figs.cfd_images = n
        self.figs.cfd_note = (f"{n} images per set at {image_size[0]}x{image_size[1]}: generated renders and captured "
                              "held-out anchor views of the same rig; ceiling: captured training-episode views vs the "
                              "same held-out views")

    def figures(self) -> SemanticFigures:
        """The figures accumulated so far."""
        f = self.figs
        no_hit = {key: (v[0] / v[1] if v[1] else None) for key, v in self.sky.items()}
        f.sky_no_hit_stage1, f.sky_no_hit_lae = no_hit["s1"], no_hit["lae"]
        if self.head is not None and self.counts["recon"]:
            f.stage1 = iou_figures(self.recon["s1"], self.head, self.counts["recon"])
            f.stage1_lae = iou_figures(self.recon["lae"], self.head, self.counts["recon"])
        if self.critic is not None:
            classes = self.critic.classes
            if self.counts["captured"]:
                f.critic_captured = iou_figures(self.captured, classes, self.counts["captured"])
            if self.head is None:
                f.agreement_note = self.head_note
            else:
                if self.counts["generated"]:
                    f.agreement_generated = iou_figures(self.agree["generated"], classes, self.counts["generated"])
                if self.counts["s1"]:
                    f.agreement_stage1 = iou_figures(self.agree["s1"], classes, self.counts["s1"])
        return f


def spread_indices(n: int, k: int | None) -> list[int]:
    """`k` indices spread evenly over range(n), sorted (all when k is None or ≥ n)."""
    if k is None or k >= n:
        return list(range(n))
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, k)})


# ------------------------------------------------------------------------------------------------ report
def _iou_cell(f: IoUFigures | None, note: str) -> str:
    if f is None:
        return note or "unavailable: nothing was measured"
    return f"{f.miou:.3f} (majority-class baseline {f.majority_miou:.3f}; {f.images} images)"


def semantic_markdown(s: SemanticFigures) -> list[str]:
    """The report's "Semantics" section (markdown lines): the semantic field against captured tags, per-class IoU,
    the critic's label agreement and its ceiling, and the critic Fréchet distance and its ceiling."""
    lines = ["## Semantics (held-out windows)", "", "| figure | value |", "|---|---|"]
    recon = s.reconstruction_note
    lines += [f"| semantic mIoU vs captured tags, stage 1 ↑ | {_iou_cell(s.stage1, recon)} |",
              f"| semantic mIoU vs captured tags, stage 1 + LAE ↑ | {_iou_cell(s.stage1_lae, recon)} |"]
    pct = lambda v: "no sky in the held-out views" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    lines += [f"| captured-sky pixels rendered with no hit, stage 1 ↑ | {pct(s.sky_no_hit_stage1)} |",
              f"| captured-sky pixels rendered with no hit, stage 1 + LAE ↑ | {pct(s.sky_no_hit_lae)} |"]
    agree = s.agreement_note or s.critic
    lines += [f"| label agreement (critic on RGB vs field labels), generated ↑ | {_iou_cell(s.agreement_generated, agree)} |",
              f"| label agreement, stage-1 reconstructions ↑ | {_iou_cell(s.agreement_stage1, agree)} |",
              f"| label agreement ceiling: critic vs captured tags ↑ | {_iou_cell(s.critic_captured, s.critic)} |"]
    if s.cfd is None:
        cfd = ceiling = s.cfd_note or s.critic
    else:
        cfd, ceiling = f"{s.cfd:.3f}", f"{s.cfd_ceiling:.3f}"
    lines += [f"| critic Fréchet distance (CFD), captured held-out vs generated ↓ | {cfd} |",
              f"| CFD ceiling: captured training vs held-out episodes ↓ | {ceiling} |", ""]
    if s.stage1 is not None:
        names = [n for n in s.classes.get("head", []) if n in s.stage1.class_iou]
        lines += ["Per-class IoU of the semantic field (classes present in the held-out captures):", "",
                  "| class | stage 1 | stage 1 + LAE |", "|---|---|---|"]
        lines += [f"| {n} | {s.stage1.class_iou[n]:.3f} | {s.stage1_lae.class_iou.get(n, float('nan')):.3f} |"
                  for n in names]
        lines.append("")
    if not s.critic.startswith("unavailable"):
        lines.append(f"Critic: {s.critic}. CFD: {s.cfd_note}")
        lines.append("")
    return lines
