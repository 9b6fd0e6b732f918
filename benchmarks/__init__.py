"""assetflow's benchmark suite: ``python -m benchmarks [--quick] [--peers] [--only W1,W3]``.

Every timed run happens in a fresh subprocess, so import costs and peak RSS are honest. See
``benchmarks/README.md`` for the workloads, their shapes and how the figures are computed.

This package must stay light: the in-process runner (:mod:`benchmarks.inproc`) is imported inside
every measured subprocess, so nothing here imports assetflow or heavy libraries at module level.
"""
