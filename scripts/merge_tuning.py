r"""Puts a re-tuning of some methods (``mode=tune`` with ``reproduce.methods`` set, the same
``config.tune`` rule) into a committed tuning log, and regenerates its table.

  .venv/bin/python -m experiments.main --config=configs/digits.py --config.mode=tune \
      --config.reproduce.methods="('scrub',)" --workdir=runs/tune_scrub
  .venv/bin/python scripts/merge_tuning.py docs/tuning_digits.json runs/tune_scrub/tune.json \
      "after its loaders took SCRUB's batch sizes (2026-12-05)"

Writes ``docs/tuning_digits.json`` and ``.md`` (the methods in the order of the log).
"""
import json
import sys

from cure_jax.classification import tuning
from cure_jax.infra import files


def main(argv):
  if len(argv) != 4:
    sys.exit(f'usage: {argv[0]} LOG.json RETUNE.json WHY')
  path, update_path, why = argv[1:]
  try:
    with open(path) as f:
      doc = json.load(f)
    with open(update_path) as f:
      update = json.load(f)
    merged = tuning.merge(doc, update, why)
    merged['rule']['dataset']  # a log without its dataset: say so, as for a missing key
  except (OSError, ValueError, KeyError) as e:
    sys.exit(f'merge_tuning: {e}')
  order = list(dict.fromkeys(t['method'] for t in merged['trials']))
  dataset = merged['rule']['dataset']
  files.write_atomic(path, files.to_json(merged))
  files.write_atomic(path.replace('.json', '.md'), tuning.markdown(merged, order, dataset))


if __name__ == '__main__':
  main(sys.argv)
