"""Fast CPU kernels for the reference models, behind one seam (``seam.fast_path``).

* ``kernels``: the fast forms of layers (shift-add depthwise convolutions, matmul 1x1 and
  2-tap convolutions, pairwise max-pools, folded inference BatchNorm);
* ``fused``: hand-written gradients (``jax.custom_vjp``) where XLA's automatic ones run slowly;
* ``seam``: computes known Flax modules (``nn.Conv``, ``nn.BatchNorm``, registered blocks) with
  them, on the modules' own variables;
* ``blocks``: whole-block fast functions (the stock ``EffNetBlock``).

Models opt in through ``implementation`` (``"auto"``: this path on CPU, plain XLA elsewhere).
"""
