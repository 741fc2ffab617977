"""Metrics: image (PSNR, depth AbsRel), the pixel masks they and the losses share, 3D scene sets, FID/KID."""
