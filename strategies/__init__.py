"""prunekit.strategies: the built-in pruning strategies, one module each.

- ``chex``: CHEX, periodic prune-and-regrow from scratch (Hou et al., CVPR 2022)
- ``magnitude``: prune once by the L1/L2 norm of each channel, then fine-tune
- ``random``: prune once, random channels (a baseline)

They are registered through the ``prunekit.strategies`` entry points declared in pyproject.toml, exactly
as a third-party plugin would be; nothing here imports or registers them by name. Use
``prunekit.get_strategy(name, **params)``.
"""
