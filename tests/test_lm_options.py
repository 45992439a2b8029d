"""LM run options: the author-names forget mask, gradient accumulation and the evaluator's
generation length / EOS stop."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cure_jax import entry
from cure_jax.infra import sharding, train_state
from cure_jax.lm import defaults as lm_config
from cure_jax.unlearning import plan
from cure_jax.lm import evaluate, train, setup, protocol, unlearn
from cure_jax.unlearning import hparams, losses, objectives
from cure_jax.models.causal_lm import CausalLM, LMConfig
from cure_jax.text.tokenizer import ByteTokenizer
from tests import sharded_steps, tolerances

V = 7


def _batch():
  tokens = np.array([[1, 2, 3, 4, 5], [1, 6, 2, 0, 0]], np.int32)
  loss_mask = np.array([[0, 1, 1, 1, 0], [1, 1, 0, 0, 0]], np.float32)
  return {'tokens': tokens, 'loss_mask': loss_mask}


def test_name_mask_is_the_same_ids_at_every_position():
  targets = jnp.array([[1, 2], [3, 4]])
  mask = np.asarray(losses.token_forget_mask(targets, V, (2, 5)))
  expected = np.zeros((2, 2, V), bool)
  expected[..., [2, 5]] = True
  np.testing.assert_array_equal(mask, expected)
  np.testing.assert_array_equal(losses.token_forget_mask(targets, V),
                                np.eye(V, dtype=bool)[np.asarray(targets)])


def test_ghr_with_name_mask_relabels_to_the_best_token_outside_the_names():
  batch = _batch()
  teacher = np.asarray(jax.random.normal(jax.random.key(1), (2, 5, V)))
  logits = jax.random.normal(jax.random.key(2), (2, 5, V))
  names = (0, 3)
  hp = hparams.HParams(hparams.DEFAULTS, {})

  def ghr(forget_ids):
    mask = losses.token_forget_mask(batch['tokens'][:, 1:], V, forget_ids)
    core = dataclasses.replace(unlearn.lm_batch(batch), teacher_logits=teacher, forget_mask=mask)
    return objectives.ghr(logits, core, None, hp)
  # Independent: labels = argmax of the teacher with the name ids removed, then mean CE.
  allowed = teacher.copy()
  allowed[..., list(names)] = -np.inf
  labels = allowed[:, :-1].argmax(-1)
  z = np.asarray(logits[:, :-1], np.float64)
  log_probs = z - z.max(-1, keepdims=True)
  log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
  ce = -np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]
  mask = batch['loss_mask'][:, :-1]
  expected = (ce * mask).sum(1) / mask.sum(1)
  # The same float32 logits in float32 against float64: the log-softmax over V and the mean
  # over 4 positions round a few (V + 8) times on values of size 2 max|z| + log V (~3e-6).
  zmax = float(np.abs(z).max())
  tol = tolerances.gamma(V + 8) * (2 * zmax + np.log(V))
  assert np.all(np.abs(np.asarray(ghr(names), np.float64) - expected) <= tol)
  # The answer-token mask differs (the true next token is the forget class there).
  assert not np.allclose(ghr(None), expected)


def test_forget_ids_are_the_forget_authors_name_tokens():
  config = lm_config.get_config('smoke')
  splits = protocol.load_splits(config.data)
  assert protocol.forget_ids(config, ByteTokenizer(), splits) is None
  config.unlearn.forget_mask = 'author_names'
  ids = protocol.forget_ids(config, ByteTokenizer(), splits)
  names = {item['author'] for item in splits['forget']}
  assert set(ids) == set(''.join(names).replace(' ', '').encode())  # bytes, no space
  config.unlearn.forget_mask = 'names'
  with pytest.raises(ValueError, match='config.unlearn.forget_mask'):
    entry.validate(config)
  config.unlearn.forget_mask = 'author_names'
  config.data.update(source='tofu', data_dir='/tofu')
  with pytest.raises(ValueError, match='author_names'):
    entry.validate(config)


# _tiny_lm: a logit passes through 1 layer x 8 stages (norm, q/k/v, scores, attention,
# o_proj, norm, gate/up, down), the final norm and the head; its longest reductions are
# d_ff = 16 terms. Two programs of it (a scan over micro-batches, one batch alone) may order
# them differently: its logits within TINY_STAGES x reordered_sum(16) of the largest, and a
# gradient (forward and backward: twice the stages) within TINY_GRAD_RTOL (3.8e-5) in norm.
TINY_STAGES, TINY_LONGEST = 8 + 2, 16
TINY_GRAD_RTOL = 2 * TINY_STAGES * tolerances.reordered_sum(TINY_LONGEST)


def _tiny_lm():
  model = CausalLM(LMConfig(vocab_size=V, num_layers=1, d_model=8, num_heads=2, num_kv_heads=1,
                            d_ff=16, max_len=8))
  params = model.init(jax.random.key(0), jnp.zeros((1, 5), jnp.int32))['params']
  return (lambda p, t: model.apply({'params': p}, t)), params


def test_accumulated_is_the_mean_over_micro_batches():
  apply_fn, params = _tiny_lm()
  batch = _batch()
  loss_fn = lambda p, b: jnp.mean(losses.answer_nll(apply_fn(p, b['tokens']), b['tokens'],
                                                    b['loss_mask']))
  loss, grads = jax.jit(lambda p, b: train.accumulated(loss_fn, p, b))(
      params, train.micro_batches(batch, 2))
  parts = [jax.value_and_grad(loss_fn)(params, {k: v[i:i + 1] for k, v in batch.items()})
           for i in range(2)]
  # A mean NLL moves by at most twice its logits' bound (plus the float32 log-softmax's and
  # mean's few roundings, gamma(V + 8) of 2 max|z| + log V).
  zmax = max(float(jnp.abs(apply_fn(params, batch['tokens'])).max()), 1.0)
  delta = tolerances.logits_bound(tolerances.reordered_sum(TINY_LONGEST), TINY_STAGES, zmax)
  tol = 2 * delta + tolerances.gamma(V + 8) * (2 * zmax + np.log(V))
  assert abs(float(loss) - (float(parts[0][0]) + float(parts[1][0])) / 2) <= tol
  expected = jax.tree.map(lambda a, b: (a + b) / 2, parts[0][1], parts[1][1])
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
    sharded_steps.assert_close(got, want, TINY_GRAD_RTOL, 'accumulated gradient')


@pytest.mark.parametrize('method', ['npo_descent', 'grogu_descent'])
def test_unlearn_step_with_accumulation_averages_the_micro_directions(method):
  apply_fn, params = _tiny_lm()
  hp = dict(hparams.DEFAULTS, npo_beta=0.1, temperature=2.0, w_h=0.5, w_s=0.5, retain_weight=0.5,
            eps=1e-12, grogu_impl='vmap')
  batch = _batch()
  retain = {k: v[::-1] for k, v in batch.items()}
  tx = optax.sgd(0.1)

  def run_step(grad_accum, forget, retain_batch):
    state = train_state.create({'params': jax.tree.map(jnp.copy, params), 'batch_stats': {}}, tx)
    step = unlearn.make_unlearn_step(apply_fn, method, hp, tx, grad_accum)
    return step(state, params, forget, retain_batch, jax.random.key(0))[0].params

  split = lambda b: {k: v.reshape((2, 1) + v.shape[1:]) for k, v in b.items()}
  accumulated = run_step(2, split(batch), split(retain))
  singles = [run_step(1, {k: v[i:i + 1] for k, v in batch.items()},
                      {k: v[i:i + 1] for k, v in retain.items()}) for i in range(2)]
  # SGD: the update of the mean direction is the mean of the single-batch updates.
  expected = jax.tree.map(lambda a, b: (a + b) / 2, *singles)
  # One SGD step (lr 0.1, an update smaller than the parameters) whose direction the two
  # programs compute in other orders: GROGU's projections (inner products over all the
  # parameters, float32) amplify the gradients' bound at most 4x and add 3 roundings of P
  # terms (2.7e-4 in norm per tensor, where a wrong micro-batch mean moves it by O(1)).
  terms = sum(np.size(x) for x in jax.tree.leaves(params))
  rtol = 4 * TINY_GRAD_RTOL + 3 * tolerances.gamma(terms)
  for got, want in zip(jax.tree.leaves(accumulated), jax.tree.leaves(expected)):
    sharded_steps.assert_close(got, want, rtol, method)


def test_finetune_rejects_a_batch_that_accumulation_cannot_split(tmp_path):
  config = lm_config.get_config('smoke')
  config.finetune.grad_accum = 3
  with pytest.raises(ValueError, match='grad_accum=3'):
    train.finetune(None, {'tokens': np.zeros((16, 8), np.int32),
                          'loss_mask': np.zeros((16, 8), np.float32)},
                      config.finetune, 0, str(tmp_path), {})


ITEM = {'question': 'Who?', 'answer': 'Ann.', 'paraphrased_answer': 'It is Ann.',
        'perturbed_answer': ['Bob.', 'Cy.'], 'author': 'a'}


@pytest.mark.parametrize('max_new_tokens, max_len, expected', [
    (200, 256, 200),        # the configured length
    (5, 256, 5),
    (1000, 64, 64 - 12),    # capped by the context: max_len - prompt width
])
def test_generation_length_and_eos_stop(monkeypatch, max_new_tokens, max_len, expected):
  tok = ByteTokenizer()
  model = CausalLM(LMConfig(vocab_size=264, num_layers=1, d_model=16, num_heads=2,
                            num_kv_heads=1, d_ff=32, max_len=max_len))
  evaluator = evaluate.Evaluator(model, tok, {'forget': [ITEM]}, 'Q: {question}\nA: ',
                                 batch_size=2, max_new_tokens=max_new_tokens)
  assert evaluator.prompt_width == 12  # "Q: Who?\nA: " is 11 bytes, + bos
  assert evaluator.max_new_tokens == expected
  calls = []

  def fake_generate(model_, params, tokens, lengths, max_new, eos_id):
    calls.append((max_new, eos_id))
    row = list(b'Ann. ') + [eos_id] + list(b'junk') + [eos_id] * max_new
    return np.array([row[:max_new]] * len(tokens))

  monkeypatch.setattr(evaluate.causal_lm, 'generate', fake_generate)
  # Decoded up to the first EOS ("junk" after it is dropped), stripped.
  assert evaluator.generate(None) == {'forget': ['Ann.']}
  assert calls == [(expected, tok.eos_id)]


def test_default_generation_length_is_open_unlearnings():
  assert lm_config.get_config().eval.max_new_tokens == evaluate.DEFAULT_MAX_NEW_TOKENS == 200


def test_fsdp_placement_fine_tunes_and_unlearns_like_replicated(tmp_path):
  """config.model.sharding='fsdp' shards parameters and AdamW state over the tests' 4 CPU
  devices; the fine-tuned and unlearned parameters equal the replicated run's."""
  from cure_jax.data import authors, tofu  # pylint: disable=g-import-not-at-top
  config = lm_config.get_config('smoke')
  config.model.update(num_layers=1, d_model=64, d_ff=256, num_heads=2, num_kv_heads=1)
  config.finetune.update(epochs=1, batch_size=4, log_every=100)
  config.unlearn.update(epochs=1, batch_size=4, warmup_fraction=0.0)
  tok = ByteTokenizer()
  model = setup.make_model(config, tok)
  encoded = train.trim(tofu.encode_qa(tok, authors.generate_authors(2, 4, 0), 160,
                                      config.data.template))
  apply_fn = lambda p, t: model.apply({'params': p}, t)
  hp = plan.runs(config, entries=['npo_descent'])[0].hparams
  results = {}
  for mode in ('replicated', 'fsdp'):
    config.model.sharding = mode
    tuned = train.finetune(model, encoded, config.finetune, 0, str(tmp_path / mode), {},
                           mode=mode)
    results[mode] = (tuned, unlearn.unlearn(apply_fn, tuned, encoded, encoded, hp,
                                            'npo_descent', 0, mode=mode))
  mesh = sharding.make_mesh()
  placed = sharding.place(results['fsdp'][0], mesh, 'fsdp')
  assert any(leaf.sharding.spec != jax.sharding.PartitionSpec()
             for leaf in jax.tree.leaves(placed))  # something really is sharded
  # FSDP splits every batch reduction (batch x 160 tokens) and AdamW state over the devices:
  # rounding of a reordered sum in each of the fine-tuning's and the unlearning's steps
  # (8 examples at batch 4: 2 + 2), doubled for Adam's m / sqrt(v) (tests/sharded_steps.py).
  steps = 2 * (len(encoded) // 4)
  rtol = 2 * tolerances.reordered_run(steps, 4 * 160)
  for got, want in zip(jax.tree.leaves(results['fsdp']), jax.tree.leaves(results['replicated'])):
    sharded_steps.assert_close(got, want, rtol=rtol, what='fsdp vs replicated')
