"""diffkit plugin: autoencoder models with diffusers' config and weight layout (``VQModel``).

The encoder, decoder and vector quantizer live in their own modules so that other
autoencoders of the family reuse them; this package module imports nothing so that plugin
discovery stays cheap.
"""
