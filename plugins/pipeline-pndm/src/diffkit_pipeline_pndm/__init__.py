"""diffkit plugin: PNDMPipeline."""
