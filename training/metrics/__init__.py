"""Metrics: image (PSNR, depth AbsRel), 3D scene sets, FID/KID."""
