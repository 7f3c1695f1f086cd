"""diffkit community plugin: ``DDIMTwistPipeline`` (mirror-symmetric DDIM sampling).

Empty on purpose: diffkit imports only ``hooks`` to learn the names, and the pipeline module
when the name is resolved.
"""
