"""diffkit plugin template: ``ExampleRescaleProcessor``.

Keep this file empty of imports: diffkit imports ``diffkit_example.hooks`` (and so this
package) whenever it builds its registry, and that must stay cheap.
"""
