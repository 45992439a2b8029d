"""What every task's runner shares: the command line (``cli``, ``entry``), the rules of what
a setting may be (``rules``) and the start-up checks (``validation``), the run plan
(``plan``: scenarios, seeds and effective hyperparameters), the one training loop and model
cache (``trainer``), the resumable sweep log, model fingerprints and checkpoints, the console
and progress lines, device meshes and shardings (``sharding``) and the train state.
"""
