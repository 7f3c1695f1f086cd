from diffkit.hookspecs import hookimpl


@hookimpl
def register_processors(register):
    register("VaeImageProcessor", "diffkit_processors_image.image_processor:VaeImageProcessor")
