"""What every task's runner shares, below the unlearning core and the tasks (it imports
neither): the rules of what a setting may be (``rules``) and the shared start-up checks and
parsers (``validation``), the one training loop and model cache (``trainer``), the
resumable sweep log, model fingerprints and checkpoints, the console and progress lines,
device meshes and shardings (``sharding``) and the train state. The command line
(``cure_jax.cli``, ``cure_jax.entry``) sits above the tasks.
"""
