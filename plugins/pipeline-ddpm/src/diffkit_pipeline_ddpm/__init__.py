"""diffkit plugin: DDPMPipeline."""
