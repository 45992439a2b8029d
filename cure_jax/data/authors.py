"""A deterministic, TOFU-style fictitious-authors QA set, small enough to memorise on CPU.

Every item follows TOFU's schema::

  {'question': str, 'answer': str, 'paraphrased_answer': str,
   'perturbed_answer': [str, ...],   # wrong answers of the same shape as 'answer'
   'author': str}                    # grouping key for the splits

Answers are single short sentences (about 40-90 characters) so that a byte-level LM of a few
million parameters learns 40 authors x 20 questions in minutes. Perturbed answers reuse the
answer's sentence with the fact swapped for another value of the same kind.

Splits follow TOFU, by author (see :func:`make_splits`): forget sets are nested
(forget01 ⊂ forget05 ⊂ forget10), ``full`` (the fine-tuning set) is the same for every
``forget_pct``, and holdout authors are never part of ``full``.
"""
import random

from cure_jax.data.author_profiles import FACTS, SAMPLERS, sample_author
# make_splits adds the utility sets to every split dict; they stay importable from here.
from cure_jax.data.utility_qa import real_authors, world_facts

NUM_PERTURBED = 5
MIN_FORGET_AUTHORS = {1: 1, 5: 2, 10: 4}


def _perturbed(rng, fact, fields):
  """NUM_PERTURBED distinct wrong answers: the answer with the fact's attribute resampled."""
  true_answer = fact['answer'].format(**fields)
  wrong = []
  for _ in range(1000):
    candidate = fact['answer'].format(**{**fields, **SAMPLERS[fact['key']](rng)})
    if candidate != true_answer and candidate not in wrong:
      wrong.append(candidate)
      if len(wrong) == NUM_PERTURBED:
        return wrong
  raise RuntimeError(f'Could not draw {NUM_PERTURBED} perturbations for {fact["key"]!r}.')


def generate_authors(num_authors=40, qa_per_author=20, seed=0):
  """``num_authors * qa_per_author`` QA items about invented authors, grouped by author.

  The same ``seed`` always gives the same items. Questions are the first ``qa_per_author``
  of 20 fixed kinds (name, birthplace, birth date, genre, parents' jobs, award, books, ...).
  """
  if num_authors < 1:
    raise ValueError(f'num_authors={num_authors} must be >= 1.')
  if not 1 <= qa_per_author <= len(FACTS):
    raise ValueError(f'qa_per_author={qa_per_author} must lie in [1, {len(FACTS)}] '
                     f'(there are {len(FACTS)} kinds of question).')
  rng = random.Random(seed)
  items, names = [], set()
  for _ in range(num_authors):
    fields = sample_author(rng, names)
    names.add(fields['n'])
    for fact in FACTS[:qa_per_author]:
      items.append({
          'question': fact['question'].format(**fields),
          'answer': fact['answer'].format(**fields),
          'paraphrased_answer': fact['paraphrase'].format(**fields),
          'perturbed_answer': _perturbed(rng, fact, fields),
          'author': fields['n'],
      })
  return items


def author_order(items):
  """Authors in order of first appearance."""
  return list(dict.fromkeys(item['author'] for item in items))


def num_split_authors(num_authors, forget_pct):
  """Forget (= holdout) authors for ``forget_pct`` out of ``num_authors`` authors."""
  if forget_pct not in MIN_FORGET_AUTHORS:
    raise ValueError(f'forget_pct={forget_pct!r}; TOFU splits exist for 1, 5 and 10 percent.')
  return max(MIN_FORGET_AUTHORS[forget_pct], round(forget_pct * num_authors / 100))


def make_splits(items, forget_pct, forget_set=0):
  """TOFU-style splits of author QA ``items`` (e.g. from :func:`generate_authors`), by author.

  With ``N`` authors in order of appearance and ``k_p = max({1: 1, 5: 2, 10: 4}[p],
  round(p * N / 100))`` for ``p`` in {1, 5, 10}:

  - the last ``k_10`` authors are reserved as holdout and never trained on;
  - ``full`` = the other ``N - k_10`` authors (the fine-tuning set, the same for every p);
  - ``forget`` = the last ``k_p`` authors of ``full`` (nested like TOFU's forget01/05/10);
  - ``retain`` = the rest of ``full`` (retain99/95/90); ``holdout`` = the first ``k_p``
    reserved authors (holdout01/05/10);
  - ``retain_eval`` = the retain items to evaluate on (all of ``retain`` here; a subset for
    real TOFU, whose perturbed answers only cover 400 retain questions);
  - ``world_facts`` and ``real_authors``: the hand-written utility sets.

  With 40 authors: 4 holdout, 36 in ``full``, forget = 1/2/4 authors.

  ``forget_set = k > 0`` forgets the ``k``-th block of ``k_p`` authors before those instead
  (``full`` and ``holdout`` unchanged, so one original model serves every forget set); at
  least one retain author must remain.
  """
  authors = author_order(items)
  num_reserved = num_split_authors(len(authors), 10)
  num_forget = num_split_authors(len(authors), forget_pct)
  if len(authors) < 2 * num_reserved + 1:
    raise ValueError(f'{len(authors)} authors are too few for TOFU splits: {num_reserved} are '
                     f'held out and up to {num_reserved} forgotten, so at least '
                     f'{2 * num_reserved + 1} are needed; raise num_authors.')
  trained = authors[:-num_reserved]
  end = len(trained) - forget_set * num_forget
  if forget_set < 0 or end - num_forget < 1:
    raise ValueError(f'forget_set={forget_set}: {len(trained)} fine-tuned authors hold '
                     f'{(len(trained) - 1) // num_forget} forget sets of {num_forget} author(s) '
                     'beside a retain author; raise num_authors or use fewer forget sets.')
  forget_authors = set(trained[end - num_forget:end])
  holdout_authors = set(authors[-num_reserved:][:num_forget])
  trained = set(trained)
  full = [item for item in items if item['author'] in trained]
  retain = [item for item in full if item['author'] not in forget_authors]
  return {
      'forget': [item for item in full if item['author'] in forget_authors],
      'retain': retain,
      'retain_eval': list(retain),
      'holdout': [item for item in items if item['author'] in holdout_authors],
      'full': full,
      'world_facts': world_facts(),
      'real_authors': real_authors(),
  }
