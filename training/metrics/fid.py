"""FID and KID on Inception pool features — only with the standard FID Inception weights supplied by the user.

The standard weights are pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (the TensorFlow FID Inception
graph ported to PyTorch). That network is torchvision's ``inception_v3`` (1008 classes, no aux logits) with some
blocks changed: the average pools of the A, C and first E blocks exclude padding, and the last E block uses a max
pool. `FIDInceptionV3` rebuilds exactly that from torchvision's blocks (the patched ``forward`` s are a port of
pytorch-fid's ``FIDInceptionA/C/E_1/E_2``, Apache-2.0, M. Seitzer), loads the file with a strict key and shape
check, and returns the 2048-d pool features of images resized to 299×299 (bilinear) and scaled to [-1, 1], as
pytorch-fid does. FID/KID figures are never computed with any other weights: without the file there is no number.

* `frechet_distance` — ``‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½)`` (Heusel et al. 2017).
* `kernel_inception_distance` — unbiased MMD² with the cubic polynomial kernel ``k(x, y) = (xᵀy / d + 1)³``
  averaged over random subsets (Bińkowski et al. 2018).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from nfldm_training.errors import TrainingError, TrainingInputNotFound

#: The file name of the standard weights (pytorch-fid's release asset).
FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_HELP = (f"FID/KID need the standard FID Inception weights: download {FID_WEIGHTS_NAME} from "
                    "https://github.com/mseitzer/pytorch-fid/releases/tag/fid_weights and pass "
                    f"--inception-weights PATH/{FID_WEIGHTS_NAME}")


def _blocks():
    """pytorch-fid's FID Inception blocks, built on torchvision's (module docstring)."""
    from torchvision.models import inception as tv  # start-up time: torchvision loads only when FID is computed

    class FIDInceptionA(tv.InceptionA):
        def forward(self, x):
            b1 = self.branch1x1(x)
            b5 = self.branch5x5_2(self.branch5x5_1(x))
            b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False))
            return torch.cat([b1, b5, b3, bp], 1)

    class FIDInceptionC(tv.InceptionC):
        def forward(self, x):
            b1 = self.branch1x1(x)
            b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            bd = x
            for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                          self.branch7x7dbl_5):
                bd = layer(bd)
            bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False))
            return torch.cat([b1, b7, bd, bp], 1)

    class FIDInceptionE(tv.InceptionE):
        def __init__(self, in_channels: int, max_pool: bool):
            super().__init__(in_channels)
            self.max_pool = max_pool

        def forward(self, x):
            b1 = self.branch1x1(x)
            b3 = self.branch3x3_1(x)
            b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
            bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
            if self.max_pool:  # the TF graph's last block max-pools here
                pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
            else:
                pooled = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
            return torch.cat([b1, b3, bd, self.branch_pool(pooled)], 1)

    return tv, FIDInceptionA, FIDInceptionC, FIDInceptionE


class FIDInceptionV3(nn.Module):
    """The FID Inception network: ``[N, 3, H, W]`` RGB in [0, 1] -> ``[N, 2048]`` pool features.

    Build with `load`; the constructor makes the architecture with uninitialised weights.
    """

    def __init__(self):
        super().__init__()
        tv, A, C, E = _blocks()
        net = tv.Inception3(num_classes=1008, aux_logits=False, init_weights=False)
        net.Mixed_5b, net.Mixed_5c, net.Mixed_5d = A(192, pool_features=32), A(256, pool_features=64), A(288, pool_features=64)
        net.Mixed_6b = C(768, channels_7x7=128)
        net.Mixed_6c = C(768, channels_7x7=160)
        net.Mixed_6d = C(768, channels_7x7=160)
        net.Mixed_6e = C(768, channels_7x7=192)
        net.Mixed_7b, net.Mixed_7c = E(1280, max_pool=False), E(2048, max_pool=True)
        self.net = net

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "FIDInceptionV3":
        """The network with the weights file at `path` (every key and shape checked; torch.load weights_only)."""
        path = Path(path)
        if not path.is_file():
            raise TrainingInputNotFound(f"{path} not found. {FID_WEIGHTS_HELP}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = cls()
        missing, unexpected = model.net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise TrainingError(f"{path} is not the FID Inception weights file ({len(missing)} missing keys, e.g. "
                                f"{missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]}). {FID_WEIGHTS_HELP}")
        return model.eval().to(device)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images [N, 3, H, W]`` in [0, 1] -> ``[N, 2048]`` float64 features (pytorch-fid's block 3)."""
        n = self.net
        x = F.interpolate(images.float(), size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
        x = n.Conv2d_2b_3x3(n.Conv2d_2a_3x3(n.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = F.max_pool2d(n.Conv2d_4a_3x3(n.Conv2d_3b_1x1(x)), kernel_size=3, stride=2)
        for block in (n.Mixed_5b, n.Mixed_5c, n.Mixed_5d, n.Mixed_6a, n.Mixed_6b, n.Mixed_6c, n.Mixed_6d, n.Mixed_6e,
                      n.Mixed_7a, n.Mixed_7b, n.Mixed_7c):
            x = block(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1).double()


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between Gaussians N(mu1, sigma1) and N(mu2, sigma2) (pytorch-fid's numerics: scipy sqrtm,
    a small diagonal offset when the product is singular, imaginary rounding residue dropped).

    Worked example: 1-D N(0, 1) vs N(3, 4): 9 + 1 + 4 − 2·2 = 10.
    """
    from scipy import linalg  # start-up time: scipy loads only when FID is computed

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def feature_fid(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """FID between two feature sets ``[N, d]`` (means and sample covariances, ddof 1, as pytorch-fid)."""
    return frechet_distance(feats1.mean(0), np.cov(feats1, rowvar=False), feats2.mean(0), np.cov(feats2, rowvar=False))


def kernel_inception_distance(feats1: np.ndarray, feats2: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0) -> tuple[float, float]:
    """KID: unbiased MMD² with ``k(x, y) = (xᵀy / d + 1)³``, mean and std over `subsets` random subsets of
    ``min(subset_size, N1, N2)`` rows of each set (seeded). Returns ``(mean, std)``; 0 in expectation for equal
    distributions (it can be slightly negative)."""
    rng = np.random.default_rng(seed)
    d = feats1.shape[1]
    m = min(subset_size, len(feats1), len(feats2))
    if m < 2:
        raise TrainingError(f"KID needs at least 2 features per set, got {len(feats1)} and {len(feats2)}")
    vals = []
    for _ in range(subsets):
        x = feats1[rng.choice(len(feats1), m, replace=False)]
        y = feats2[rng.choice(len(feats2), m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        vals.append((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                    - 2 * kxy.mean())
    return float(np.mean(vals)), float(np.std(vals))


@dataclass
class ImageDistances:
    """FID and KID of generated against captured images (Inception pool features).

    Attributes:
        fid: Fréchet Inception distance.
        kid_mean, kid_std: KID over random subsets (mean, std).
        num_generated, num_reference: images per side.
    """

    fid: float
    kid_mean: float
    kid_std: float
    num_generated: int
    num_reference: int
