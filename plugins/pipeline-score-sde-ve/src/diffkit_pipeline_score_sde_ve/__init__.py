"""diffkit plugin: ScoreSdeVePipeline."""
