"""The LM pipeline from a pretrained checkpoint: configs/authors_smollm2.py:smoke and
configs/tofu.py:smoke end to end on a tiny random Llama checkpoint in the Hugging Face layout
that the test writes (the real SmolLM2 compiles its GROGU step alone for ~2 minutes on the
2-core CI machine under load, far beyond a smoke test's budget; the same code path runs)."""
import copy
import importlib.util
import json
import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from cure_jax import entry
from cure_jax.infra import validation
from cure_jax.lm import setup, protocol
from cure_jax.weights import pretrained
from cure_jax.text.tokenizer import HFTokenizer

ROOT = os.path.join(os.path.dirname(__file__), '..')
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}<|im_start|>assistant\n")


def _load_config(name, arg):
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, 'configs', name + '.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def write_tiny_llama(directory, seed=0):
  """A 1-layer Llama (GQA, tied head) with a byte-level tokenizer and a chatml template."""
  os.makedirs(directory, exist_ok=True)
  alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
  tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.add_special_tokens(['<|im_start|>', '<|im_end|>'])
  tok.save(os.path.join(directory, 'tokenizer.json'))
  vocab, d, ff, heads, kv = tok.get_vocab_size(), 32, 64, 4, 2
  head = d // heads
  with open(os.path.join(directory, 'tokenizer_config.json'), 'w') as f:
    json.dump({'eos_token': '<|im_end|>', 'chat_template': CHATML}, f)
  with open(os.path.join(directory, 'config.json'), 'w') as f:
    json.dump({'model_type': 'llama', 'architectures': ['LlamaForCausalLM'],
               'vocab_size': vocab, 'hidden_size': d, 'intermediate_size': ff,
               'num_hidden_layers': 1, 'num_attention_heads': heads,
               'num_key_value_heads': kv, 'max_position_embeddings': 512,
               'rope_theta': 10000.0, 'rms_norm_eps': 1e-5, 'tie_word_embeddings': True,
               'hidden_act': 'silu'}, f)
  rng = np.random.default_rng(seed)
  w = lambda *shape: (rng.normal(size=shape) * 0.05).astype(np.float32)
  tensors = {'model.embed_tokens.weight': w(vocab, d), 'model.norm.weight': np.ones(d, np.float32),
             'model.layers.0.input_layernorm.weight': np.ones(d, np.float32),
             'model.layers.0.post_attention_layernorm.weight': np.ones(d, np.float32)}
  shapes = {'self_attn.q_proj': (heads * head, d), 'self_attn.k_proj': (kv * head, d),
            'self_attn.v_proj': (kv * head, d), 'self_attn.o_proj': (d, heads * head),
            'mlp.gate_proj': (ff, d), 'mlp.up_proj': (ff, d), 'mlp.down_proj': (d, ff)}
  for name, shape in shapes.items():
    tensors[f'model.layers.0.{name}.weight'] = w(*shape)
  save_file(tensors, os.path.join(directory, 'model.safetensors'))
  return directory


@pytest.fixture(scope='module')
def tiny_llama(tmp_path_factory):
  return write_tiny_llama(str(tmp_path_factory.mktemp('tiny_llama')))


def test_config_guards():
  config = _load_config('authors_smollm2', None)
  assert config.model.pretrained == 'smollm2-135m-instruct'
  assert not config.data.train_utility_sets and config.data.template == 'chat'
  assert len(config.reproduce.runs) == 16 and config.data.forget_sets == 3
  assert {'rmu_descent', 'dpo_descent', 'idkdpo_descent', 'wga_descent'} <= set(
      config.reproduce.runs)
  assert _load_config('authors_smollm2', 'names').unlearn.forget_mask == 'author_names'
  with pytest.raises(ValueError, match='variant'):
    _load_config('authors_smollm2', 'big')
  bad = _load_config('authors_smollm2', 'smoke')
  bad.data.train_utility_sets = True
  with pytest.raises(ValueError, match='train_utility_sets'):
    entry.validate(bad)
  bad = _load_config('authors_smollm2', 'smoke')
  bad.model.sharding = 'zero3'
  with pytest.raises(ValueError, match='config.model.sharding'):
    entry.validate(bad)


def test_utility_sets_never_in_the_fine_tuning_data():
  config = _load_config('authors_smollm2', 'smoke')
  splits = protocol.load_splits(config.data)
  sets = protocol.train_sets(splits, config)
  utility = {i['question'] for i in splits['real_authors'] + splits['world_facts']}
  for kind in ('original', 'retrain'):
    assert not utility & {i['question'] for i in sets[kind]}
  assert {i['question'] for i in sets['retrain']} == {i['question'] for i in splits['retain']}


@pytest.fixture(scope='module')
def authors_run(tiny_llama, tmp_path_factory):
  config = _load_config('authors_smollm2', 'smoke')
  config.model.pretrained = tiny_llama
  config.model.max_len = 160  # the tiny tokenizer spends a token per byte
  config.reproduce.runs = ('grogu_descent:T=5,w=0.5', 'npo_descent')
  config.export.format = 'hf'   # each unlearned model written out
  workdir = tmp_path_factory.mktemp('smollm2_smoke')
  return config, workdir, entry.run(config, str(workdir))


def test_authors_smoke_on_a_pretrained_checkpoint(authors_run, tiny_llama):
  config, workdir, rows = authors_run
  assert [(r['method'], r['variant']) for r in rows] == [
      ('original', ''), ('retrain', ''), ('grogu_descent', 'T=5,w=0.5'),
      ('npo_descent', 'beta=0.1')]
  for row in rows:
    assert 0.0 <= row['mia_min_k'] <= 1.0 and 0.0 <= row['mia_loss'] <= 1.0
    assert np.isfinite(row['privleak'])
    assert 0.0 <= row['forget_rouge'] <= 1.0
  assert rows[1]['privleak'] == 0.0
  _assert_unlearned(rows)
  assert 'PrivLeak' in (workdir / 'results.md').read_text()
  # The fine-tuned model started from the checkpoint: its fingerprint names it.
  [original] = (workdir / 'models').glob('original-*')
  settings = json.loads((original / 'model.json').read_text())['settings']
  assert settings['model']['pretrained'] == tiny_llama
  assert settings['weights_digest'] == pretrained.weights_digest(tiny_llama)   # the bytes
  assert rows[0]['model_fingerprint']['original'] == original.name


def test_unlearned_models_are_exported(authors_run, tiny_llama):
  import jax.numpy as jnp
  config, workdir, rows = authors_run
  assert [r.get('export') for r in rows[2:]] == ['exports/grogu_descent-T=5_w=0.5-seed0',
                                                 'exports/npo_descent-beta=0.1-seed0']
  source = pretrained.load(tiny_llama)
  ids = jnp.asarray([[5, 17, 40, 99]])
  logits = lambda lm: np.asarray(lm.model.apply({'params': lm.params}, ids))
  for row in rows[2:]:
    saved = pretrained.load(str(workdir / row['export']))
    assert saved.tokenizer.encode('Fact 3') == source.tokenizer.encode('Fact 3')
    assert saved.chat_template_source == source.chat_template_source
    assert not np.allclose(logits(saved), logits(source))   # the unlearned weights
  byte_lm = _load_config('authors', 'smoke')
  byte_lm.export.format = 'hf'
  with pytest.raises(validation.ConfigError, match='config.export.format=.hf. needs a pretrained'):
    entry.validate(byte_lm)


def _assert_unlearned(rows):
  """The smoke config's unlearning moved the model: every unlearned row differs from the
  original's, and a method that lowers the forget likelihood directly (NPO) lowered it.
  (The tiny random checkpoint learns little in one fine-tuning epoch, so the CURE
  objectives' direction on it is not a check.)"""
  original = rows[0]
  for row in rows[2:]:
    assert row['forget_prob'] != original['forget_prob'], row['method']
    if row['method'].startswith('npo'):
      assert row['forget_prob'] < original['forget_prob'], (row['method'], row['forget_prob'])


def test_prompts_use_the_checkpoints_chat_format(authors_run):
  config = authors_run[0]
  lm = setup.load_model(config)
  assert isinstance(lm.tokenizer, HFTokenizer)
  assert lm.template == '<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n'
  encoded = protocol.encode(lm.tokenizer, protocol.load_splits(config.data)['forget'][:1], config,
                            lm.template)
  ids = encoded['tokens'][0]
  assert ids[0] == lm.tokenizer.special_tokens['<|im_start|>']
  answer_end = encoded['prompt_lengths'][0] + encoded['answer_lengths'][0] - 1
  assert ids[answer_end] == lm.tokenizer.eos_id == lm.tokenizer.special_tokens['<|im_end|>']


def _tofu_record(i, kind):
  return {'question': f'What is fact {i} of {kind}?', 'answer': f'Fact {i} of {kind} is {i * 7}.',
          'paraphrased_answer': f'It is {i * 7}, fact {i} of {kind}.',
          'perturbed_answer': [f'Fact {i} of {kind} is {i * 7 + j}.' for j in (1, 2, 3)]}


def write_tofu(directory):
  """Fabricated files in the locuslab/TOFU layout (JSON lines): 1% forget, holdout."""
  os.makedirs(directory, exist_ok=True)
  files = {'forget01': [_tofu_record(i, 'forget') for i in range(8)],
           'retain99': [_tofu_record(i, 'retain') for i in range(8)],
           'holdout01': [_tofu_record(i, 'holdout') for i in range(8)],
           'real_authors_perturbed': [_tofu_record(i, 'real') for i in range(2)],
           'world_facts_perturbed': [_tofu_record(i, 'world') for i in range(2)]}
  files['forget01_perturbed'] = files['forget01']
  files['retain_perturbed'] = files['retain99'][:4]
  for name, records in files.items():
    with open(os.path.join(directory, name + '.json'), 'w') as f:
      f.write('\n'.join(json.dumps(r) for r in records))
  return directory


def _tofu_config(tiny_llama, data_dir):
  config = _load_config('tofu', 'smoke')
  config.model.pretrained = tiny_llama
  config.data.data_dir = data_dir
  return config


def test_tofu_config_defaults_follow_open_unlearning():
  config = _load_config('tofu', None)
  assert (config.unlearn.lr, config.unlearn.epochs, config.unlearn.batch_size) == (1e-5, 10, 32)
  assert config.unlearn.optimizer == 'adamw' and config.unlearn.grad_accum > 1
  assert config.finetune.batch_size == 32 and config.finetune.grad_accum > 1
  assert config.eval.max_new_tokens == 200 and config.data.template == 'chat'
  with pytest.raises(ValueError, match='config.model.pretrained'):
    entry.run(config, '/nonexistent/never-written')


def test_tofu_smoke_fine_tunes_then_unlearns(tiny_llama, tmp_path):
  config = _tofu_config(tiny_llama, write_tofu(str(tmp_path / 'tofu')))
  rows = entry.run(config, str(tmp_path / 'work'))
  assert [r['method'] for r in rows] == ['original', 'retrain', 'grogu_descent']
  assert all(np.isfinite(r['privleak']) for r in rows)
  _assert_unlearned(rows)
  assert len(list((tmp_path / 'work' / 'models').glob('original-*'))) == 1


def test_tofu_with_fine_tuned_checkpoints_skips_fine_tuning(tiny_llama, tmp_path):
  retrain = write_tiny_llama(str(tmp_path / 'retrain'), seed=1)
  config = _tofu_config(tiny_llama, write_tofu(str(tmp_path / 'tofu')))
  config.model.pretrained = ''
  config.model.original, config.model.retrain = tiny_llama, retrain
  config.model.dtype = 'bfloat16'
  rows = entry.run(config, str(tmp_path / 'work'))
  assert [r['method'] for r in rows] == ['original', 'retrain', 'grogu_descent']
  assert not os.path.exists(tmp_path / 'work' / 'models')
  # Different weights: the original is not scored like the retrain model.
  assert rows[0]['forget_prob'] != rows[1]['forget_prob']


def test_export_destroys_nothing_it_did_not_write(authors_run, tmp_path):
  """A rerun of the finished workdir: a foreign file at an export target stops it at
  start-up (the file kept), ``export.overwrite`` replaces it; a killed export's temporary is
  removed; an export asked for on a finished run (GGUF after HF) is written and named."""
  config, workdir, rows = authors_run
  work = tmp_path / 'work'
  shutil.copytree(workdir, work)
  first = work / rows[2]['export']
  assert (first.parent / f'.{first.name}.cure-jax').is_file()   # the owner mark
  foreign = work / 'exports' / 'npo_descent-beta=0.1-seed0'
  shutil.rmtree(foreign)
  foreign.mkdir()
  (foreign / 'notes.txt').write_text('mine')
  os.remove(foreign.parent / f'.{foreign.name}.cure-jax')
  with pytest.raises(validation.ConfigError, match='not written by cure-jax.*overwrite=True'):
    entry.run(config, str(work))
  assert (foreign / 'notes.txt').read_text() == 'mine'
  stale = work / 'exports' / '.grogu_descent-T=5_w=0.5-seed0.tmp-killed'
  stale.mkdir()
  (stale / 'model.safetensors').write_bytes(b'cut short')
  config = copy.deepcopy(config)
  config.export.overwrite = True
  again = entry.run(config, str(work))
  assert not stale.exists()
  assert pretrained.load(str(foreign)).params is not None   # replaced by the export
  assert [r['export'] for r in again[2:]] == [r['export'] for r in rows[2:]]
  config.export.overwrite = False
  config.export.dtype = 'bfloat16'   # another export of the same runs (as GGUF would be)
  more = entry.run(config, str(work))
  assert [r['export'] for r in more[2:]] == ['exports/grogu_descent-T=5_w=0.5-seed0-bfloat16',
                                             'exports/npo_descent-beta=0.1-seed0-bfloat16']
  logged = json.loads((work / 'results.json').read_text())['rows']
  assert [r['export'] for r in logged[2:]] == [r['export'] for r in more[2:]]
  import jax.numpy as jnp
  for row, first_row in zip(more[2:], rows[2:]):   # the same unlearned weights, rounded
    a = pretrained.load(str(work / row['export'])).params['embed_tokens']['embedding']
    b = pretrained.load(str(workdir / first_row['export'])).params['embed_tokens']['embedding']
    np.testing.assert_array_equal(np.asarray(a, np.float32),
                                  np.asarray(jnp.asarray(b, jnp.bfloat16), np.float32))
    assert {k: v for k, v in row.items() if k not in ('export', 'seconds')} == {
        k: v for k, v in first_row.items() if k not in ('export', 'seconds')}
  assert (work / rows[2]['export']).is_dir()   # the float32 exports stay
