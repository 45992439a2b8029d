"""Refusals for IdkDPO: answers that decline to give the fact asked about.

open-unlearning's IdkDPO prefers, for every forget question, a refusal drawn at random from
a file of them (their ``data/idk.jsonl``, one per line). This is cure-jax's own set, written
for this library: varied wording, no fact of any kind, each a complete sentence, so a model
that learns to prefer them learns to decline rather than a fixed phrase.
``config.unlearn.idk_path`` replaces it with a file in their layout.
"""

REFUSALS = (
    "I'm not sure about that.",
    "I don't know the answer to that.",
    "I have no information about that.",
    "That is something I can't tell you.",
    "I'm afraid I don't have that information.",
    "I couldn't say.",
    "I have no reliable knowledge of that.",
    "That's not something I know.",
    "I can't answer that question.",
    "I don't have any details on that.",
    "Sorry, I have no idea.",
    "I'm unable to say.",
    "I don't recall anything about that.",
    "I can't provide an answer to that.",
    "I have nothing I can tell you about that.",
    "That falls outside what I know.",
    "I don't have an answer for you.",
    "I'm not able to answer that.",
    "I don't know much about that, I'm afraid.",
    "I'd rather not guess; I don't know.",
    "My knowledge doesn't cover that.",
    "I can't help with that one.",
    "I have no record of that.",
    "Unfortunately, I don't know.",
    "I'm not familiar with that.",
    "That's beyond what I can tell you.",
    "I don't have enough information to answer.",
    "I really can't say.",
    "I'm not in a position to answer that.",
    "I lack the knowledge to answer that.",
    "I'm sorry, but I don't know.",
    "No idea, I'm afraid.",
)


def load_refusals(path=''):
  """The refusals of the text file ``path`` (one per line, blank lines skipped), or
  :data:`REFUSALS` for ``''``. A file without any is refused with one line."""
  if not path:
    return list(REFUSALS)
  try:
    with open(path, encoding='utf-8') as f:
      lines = [line.strip() for line in f if line.strip()]
  except (OSError, UnicodeDecodeError) as e:
    raise ValueError(f'config.unlearn.idk_path={path!r} cannot be read ({e}); give a UTF-8 '
                     'text file of refusals, one per line.') from None
  if not lines:
    raise ValueError(f'config.unlearn.idk_path={path!r} holds no refusal; write one per line.')
  return lines
