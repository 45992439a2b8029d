"""The classification task: class unlearning on image classifiers under the paper's protocol.

``defaults`` (the complete config), ``experiment`` (the modes behind ``experiments.main``),
``protocol`` (scenarios × model seeds × methods × runs), ``compiled_runs`` (an unlearning
run as one compiled program), ``train`` (original and retrain models), ``evaluate``,
``tables`` / ``plots`` / ``report`` (what a run writes).
"""
