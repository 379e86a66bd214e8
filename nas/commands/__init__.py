"""Sub-commands of ``nas``, one module each, each with a ``register(app)`` function."""
