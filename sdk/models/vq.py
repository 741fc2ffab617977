"""Vector quantisation with a straight-through estimator, for the coarse and fine latents of the LAE.

Functional core (pure functions on tensors) and one thin module, `VectorQuantizer`.

* `nearest_codes` — index of the nearest code (squared Euclidean distance) for every vector.
* `straight_through` — ``z + sg(z_q − z)``: the forward value is the code, the gradient w.r.t. ``z`` is the
  identity (van den Oord et al., "Neural Discrete Representation Learning", 2017), so the encoder learns through
  the quantiser.
* `vq_loss_terms` — codebook term ``‖sg(z) − z_q‖²`` and commitment term ``‖z − sg(z_q)‖²`` (means over
  elements).
* `ema_codebook_update` — the exponential-moving-average codebook update of VQ-VAE-2 (Razavi et al., 2019),
  with Laplace smoothing of the cluster sizes.
* `code_statistics` — usage (fraction of codes used) and perplexity ``exp(H(p))`` of the code histogram.

Codebook update — our choice: **EMA by default** (``update="ema"``). The codebook is a buffer moved towards the
mean of the vectors assigned to each code (decay 0.99); the loss then only carries the commitment term
``β · ‖z − sg(z_q)‖²``. EMA codebooks train faster and are less sensitive to the learning rate than learned ones.
``update="loss"`` makes the codebook a parameter trained by the codebook term instead (loss = codebook + β ·
commitment), as in the original VQ-VAE.

Dead codes: a code that no vector has picked for ``dead_code_steps`` consecutive training steps is re-initialised
to a random vector of the current batch (drawn with the global torch RNG, which Lightning's ``seed_everything``
seeds; `revive_dead_codes` takes an explicit generator). Without revival a codebook initialised away from the data
keeps most codes unused forever.

Distributed training: when ``torch.distributed`` is initialised, code counts and sums are all-reduced before the
EMA update and the revival draws are broadcast from rank 0, so every rank keeps the same codebook.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["VQOutput", "VectorQuantizer", "nearest_codes", "straight_through", "vq_loss_terms", "ema_codebook_update",
           "revive_dead_codes", "code_statistics"]


# ------------------------------------------------------------------------------------------------ functional core
def nearest_codes(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest code for every vector.

    Args:
        z: ``[N, D]`` vectors.
        codebook: ``[K, D]`` codes.
    Returns:
        ``[N]`` int64 indices into `codebook` (``argmin_k ‖z − e_k‖²``; ties go to the lowest index).
    """
    # ‖z − e‖² = ‖z‖² − 2 z·e + ‖e‖²; ‖z‖² is the same for every code, so it is dropped from the argmin.
    dist = codebook.square().sum(1)[None, :] - 2.0 * z @ codebook.t()          # [N, K]
    return dist.argmin(1)


def straight_through(z: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    """``z + sg(z_q − z)``: equals `z_q` in value; its gradient flows to `z` unchanged (same shapes)."""
    return z + (z_q - z).detach()


def vq_loss_terms(z: torch.Tensor, z_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two VQ-VAE loss terms (means over all elements; same-shape inputs).

    Returns:
        ``(codebook, commitment)``: ``mean (sg(z) − z_q)²`` (moves codes, zero gradient to z) and
        ``mean (z − sg(z_q))²`` (moves the encoder output towards its code).
    """
    return F.mse_loss(z_q, z.detach()), F.mse_loss(z, z_q.detach())


def ema_codebook_update(cluster_size: torch.Tensor, embed_sum: torch.Tensor, counts: torch.Tensor,
                        sums: torch.Tensor, decay: float, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One EMA step of the codebook statistics and the codebook they define.

    Args:
        cluster_size: ``[K]`` running count of vectors per code.
        embed_sum: ``[K, D]`` running sum of the vectors per code.
        counts: ``[K]`` vectors assigned to each code in this step.
        sums: ``[K, D]`` sum of the vectors assigned to each code in this step.
        decay: EMA decay in [0, 1).
        eps: Laplace smoothing, keeps the division finite for codes with no count.
    Returns:
        ``(cluster_size [K], embed_sum [K, D], codebook [K, D])`` new values, with
        ``codebook_k = embed_sum_k / ñ_k`` and ``ñ = (n + eps) / (Σn + K eps) · Σn`` (smoothed counts).
    """
    cluster_size = decay * cluster_size + (1.0 - decay) * counts
    embed_sum = decay * embed_sum + (1.0 - decay) * sums
    n = cluster_size.sum()
    K = cluster_size.shape[0]
    smoothed = (cluster_size + eps) / (n + K * eps) * n
    return cluster_size, embed_sum, embed_sum / smoothed[:, None]


def revive_dead_codes(codebook: torch.Tensor, dead: torch.Tensor, z: torch.Tensor,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """A copy of `codebook` whose `dead` codes are replaced by random vectors of `z`.

    Args:
        codebook: ``[K, D]``.
        dead: ``[K]`` bool, codes to replace.
        z: ``[N, D]`` candidate vectors (e.g. the current batch's encoder outputs); drawn with replacement.
        generator: torch generator on `z`'s device (None: the global RNG).
    Returns:
        ``[K, D]`` new codebook (unchanged where `dead` is False).
    """
    n_dead = int(dead.sum())
    if n_dead == 0 or z.shape[0] == 0:
        return codebook
    pick = torch.randint(0, z.shape[0], (n_dead,), device=z.device, generator=generator)
    out = codebook.clone()
    out[dead] = z[pick].to(out.dtype)
    return out


def code_statistics(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Usage and perplexity of a code histogram.

    Args:
        counts: ``[K]`` vectors per code.
    Returns:
        ``(usage, perplexity)`` scalars: the fraction of codes with a non-zero count, and ``exp(−Σ p log p)`` with
        ``p = counts / Σ counts`` (1 when one code takes everything, K when all are used equally).
    """
    counts = counts.float()
    p = counts / counts.sum().clamp_min(1.0)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
    return (counts > 0).float().mean(), entropy.exp()


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


# ------------------------------------------------------------------------------------------------ module
@dataclass(eq=False)
class VQOutput:
    """What `VectorQuantizer.forward` returns.

    Attributes:
        z_q: quantised vectors in the input's layout and shape, with the straight-through gradient to the input.
        indices: code index per vector, the input's shape without the channel axis, int64.
        loss: scalar to add to the training loss: ``β · commitment`` (EMA) or ``codebook + β · commitment`` (loss).
        commitment: scalar ``mean (z − sg(z_q))²``.
        codebook_loss: scalar ``mean (sg(z) − z_q)²`` (reported in both modes; trained only with ``update="loss"``).
        usage: scalar, fraction of codes used by this batch.
        perplexity: scalar, perplexity of this batch's code histogram.
    """

    z_q: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor
    commitment: torch.Tensor
    codebook_loss: torch.Tensor
    usage: torch.Tensor
    perplexity: torch.Tensor


class VectorQuantizer(nn.Module):
    """Vector quantiser over the channel axis (axis 1) of ``[B, D, ...]`` tensors (see the module docstring).

    Args:
        num_codes: K, codebook size.
        dim: D, the vector length (= channels of the quantised tensor).
        beta: commitment weight β.
        update: ``"ema"`` (codebook buffer updated by EMA) or ``"loss"`` (codebook parameter trained by the loss).
        decay: EMA decay (``update="ema"``).
        dead_code_steps: revive codes unused for this many consecutive training steps (0 disables revival).
        init_scale: the codebook starts as ``init_scale · N(0, 1)`` (seeded by the global RNG at construction).

    State (all in the state dict): ``codebook [K, D]``, ``unused_steps [K]`` and, for EMA,
    ``cluster_size [K]``, ``embed_sum [K, D]``.
    """

    def __init__(self, num_codes: int, dim: int, beta: float = 0.25, update: str = "ema", decay: float = 0.99,
                 dead_code_steps: int = 100, init_scale: float = 1.0):
        super().__init__()
        if update not in ("ema", "loss"):
            raise ValueError(f"codebook update must be 'ema' or 'loss', got {update!r}")
        if num_codes < 1 or dim < 1:
            raise ValueError(f"need num_codes >= 1 and dim >= 1, got {num_codes}, {dim}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.num_codes, self.dim, self.beta, self.update = int(num_codes), int(dim), float(beta), update
        self.decay, self.dead_code_steps = float(decay), int(dead_code_steps)
        init = torch.randn(num_codes, dim) * init_scale
        if update == "ema":
            self.register_buffer("codebook", init)
            # cluster_size starts at 1 so that codebook = embed_sum / cluster_size is the initial codebook.
            self.register_buffer("cluster_size", torch.ones(num_codes))
            self.register_buffer("embed_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)
        self.register_buffer("unused_steps", torch.zeros(num_codes, dtype=torch.int64))

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes of `indices` (any shape ``[...]``) moved to the channel axis: ``[B, D, ...]`` for ``[B, ...]``."""
        return self.codebook[indices].movedim(-1, 1)

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Nearest codes of ``z [B, D, ...]`` (no gradient, no state change), same shape."""
        flat = z.movedim(1, -1).reshape(-1, self.dim)
        return self.codebook[nearest_codes(flat, self.codebook.to(flat.dtype))].to(z.dtype).reshape(
            z.movedim(1, -1).shape).movedim(-1, 1)

    def forward(self, z: torch.Tensor) -> VQOutput:
        """Quantise ``z [B, D, ...]`` (D = `dim` on axis 1). In training mode this also updates the EMA codebook
        and revives dead codes (after quantising: the returned codes are those before the update)."""
        if z.shape[1] != self.dim:
            raise ValueError(f"VectorQuantizer expects {self.dim} channels on axis 1, got shape {tuple(z.shape)}")
        zl = z.movedim(1, -1)                                                      # [B, ..., D]
        flat = zl.reshape(-1, self.dim).float()                                     # [N, D] (fp32 distances under AMP)
        codebook = self.codebook.float()
        idx = nearest_codes(flat.detach(), codebook.detach())                       # [N]
        zq_flat = codebook[idx]                                                     # [N, D]
        codebook_loss, commitment = vq_loss_terms(flat, zq_flat)
        loss = self.beta * commitment + (codebook_loss if self.update == "loss" else 0.0)
        counts = torch.bincount(idx, minlength=self.num_codes).to(flat.dtype)       # [K]
        if self.training:  # eval-mode calls (validation, encoding) never change the codebook
            self._update_state(flat.detach(), idx, counts)
        usage, perplexity = code_statistics(counts)
        zq = straight_through(flat, zq_flat).to(z.dtype).reshape(zl.shape).movedim(-1, 1)
        return VQOutput(z_q=zq, indices=idx.reshape(zl.shape[:-1]), loss=loss, commitment=commitment,
                        codebook_loss=codebook_loss, usage=usage, perplexity=perplexity)

    @torch.no_grad()
    def _update_state(self, flat: torch.Tensor, idx: torch.Tensor, counts: torch.Tensor) -> None:
        """EMA update (``update="ema"``), unused-step counters and dead-code revival, all from one batch."""
        counts = counts.clone()
        if self.update == "ema":
            sums = torch.zeros(self.num_codes, self.dim, device=flat.device, dtype=flat.dtype).index_add_(0, idx, flat)
            if _distributed():
                torch.distributed.all_reduce(counts)
                torch.distributed.all_reduce(sums)
            cs, es, cb = ema_codebook_update(self.cluster_size.float(), self.embed_sum.float(), counts, sums, self.decay)
            self.cluster_size.copy_(cs)
            self.embed_sum.copy_(es)
            self.codebook.copy_(cb)
        elif _distributed():
            torch.distributed.all_reduce(counts)
        self.unused_steps.add_(1).masked_fill_(counts > 0, 0)
        if self.dead_code_steps <= 0:
            return
        dead = self.unused_steps >= self.dead_code_steps
        if not bool(dead.any()):
            return
        new = revive_dead_codes(self.codebook.data.float(), dead, flat)
        if _distributed():  # one rank's draw for all, so the codebooks stay identical
            torch.distributed.broadcast(new, src=0)
        self.codebook.data.copy_(new.to(self.codebook.dtype))
        if self.update == "ema":
            self.embed_sum[dead] = new[dead].to(self.embed_sum.dtype)
            self.cluster_size[dead] = 1.0
        self.unused_steps[dead] = 0

    def extra_repr(self) -> str:
        return (f"num_codes={self.num_codes}, dim={self.dim}, beta={self.beta}, update={self.update!r}, "
                f"decay={self.decay}, dead_code_steps={self.dead_code_steps}")

