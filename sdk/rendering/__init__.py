"""Volume rendering of voxel fields: the model and its one dispatch point (`api`), the ray batch every implementation
shares (`rays`), the oracle (`reference`), the chunked PyTorch paths (`torch_paths`) and the fused Triton renderer
(`triton_render`, its kernels in `triton_kernels`); `sizes` says which image sizes a bundle renders well."""
