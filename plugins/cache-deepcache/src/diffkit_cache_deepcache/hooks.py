"""diffkit plugin: step cache 'deepcache'."""
from diffkit.hookspecs import hookimpl


@hookimpl
def register_step_caches(register):
    register("deepcache", "diffkit_cache_deepcache.deepcache:DeepCache")
