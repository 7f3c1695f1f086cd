"""diffkit plugin: the k-diffusion Euler schedulers (Euler, Euler ancestral, EDM Euler) and their shared base."""
