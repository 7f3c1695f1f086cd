"""diffkit plugin: DDIMPipeline."""
