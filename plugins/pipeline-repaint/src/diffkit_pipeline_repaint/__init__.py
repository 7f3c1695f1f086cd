"""diffkit plugin: RePaintPipeline."""
