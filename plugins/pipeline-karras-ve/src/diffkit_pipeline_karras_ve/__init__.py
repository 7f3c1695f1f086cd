"""diffkit plugin: KarrasVePipeline."""
