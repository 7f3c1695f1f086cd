"""diffkit plugin: the VQ-Diffusion scheduler (discrete diffusion over codebook indices)."""
