"""diffkit plugin: ConsistencyModelPipeline."""
