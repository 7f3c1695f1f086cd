"""diffkit plugin: the RePaint inpainting scheduler."""
