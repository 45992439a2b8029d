"""Tokenizers: a :class:`Tokenizer` protocol, the download-free :class:`ByteTokenizer` and
:class:`HFTokenizer` (a Hugging Face ``tokenizers.Tokenizer`` of a pretrained checkpoint).

Contract for any tokenizer plugged into the data code (e.g. a wrapper around a Hugging Face
``tokenizers.Tokenizer``):

- ``encode(text)`` returns the ids of ``text`` WITHOUT special tokens (no bos/eos; callers add
  them), and raises ``ValueError`` for input it cannot encode (e.g. a non-``str``).
- ``decode(ids)`` is the inverse on ordinary ids and silently drops special ids (pad/bos/eos),
  so decoding a generated row that ends in eos/pad gives just the text.
- ``encode(a + b)`` need not equal ``encode(a) + encode(b)`` for a BPE tokenizer; the QA
  encoders therefore encode prompt and answer separately (as open-unlearning does).
- ``vocab_size`` bounds every id; ``pad_id``/``eos_id`` are required, ``bos_id`` may be None.
  A model's ``vocab_size`` may be larger (checkpoints pad their embeddings): its extra ids have
  no text, and generation excludes them (``causal_lm.generate(..., vocab_limit=)``).
"""
from typing import Optional, Protocol, Sequence, runtime_checkable

# Why an id beyond the vocabulary reached decode, in the usual case.
_PADDED_HINT = ('; a model with a padded vocabulary generated it: pass '
                'vocab_limit=tokenizer.vocab_size to causal_lm.generate.')


@runtime_checkable
class Tokenizer(Protocol):
  """What the data and evaluation code needs from a tokenizer (see the module docstring)."""
  vocab_size: int
  bos_id: Optional[int]
  eos_id: int
  pad_id: int

  def encode(self, text: str) -> list[int]:
    ...

  def decode(self, ids: Sequence[int]) -> str:
    ...


class ByteTokenizer:
  """UTF-8 bytes as ids ``0..255`` plus ``pad=256``, ``bos=257``, ``eos=258``.

  ``vocab_size`` is 264: 259 rounded up to a multiple of 8 for friendlier matmul shapes; ids
  259..263 are never produced and decode to nothing.
  """
  pad_id = 256
  bos_id = 257
  eos_id = 258
  vocab_size = 264

  def encode(self, text: str) -> list[int]:
    """UTF-8 bytes of ``text`` (no special tokens)."""
    if not isinstance(text, str):
      raise ValueError(f'ByteTokenizer.encode expects a str, got {type(text).__name__}: '
                       f'{text!r:.80}. Decode bytes to str first.')
    return list(text.encode('utf-8'))

  def decode(self, ids: Sequence[int]) -> str:
    """Text of the byte ids; special and unused ids are dropped, broken UTF-8 is replaced."""
    data = bytearray()
    for i in ids:
      i = int(i)
      if not 0 <= i < self.vocab_size:
        raise ValueError(f'Token id {i} is outside [0, {self.vocab_size}) of ByteTokenizer'
                         + _PADDED_HINT)
      if i < 256:
        data.append(i)
    return data.decode('utf-8', errors='replace')


class HFTokenizer:
  """A ``tokenizers.Tokenizer`` (e.g. a checkpoint's ``tokenizer.json``) behind the protocol.

  ``encode`` applies no post-processor (no bos/eos added) but does turn special-token text in
  the input (``<|im_start|>``, ``<s>``...) into its id: chat prompts are built as text.
  ``decode`` drops special tokens. ``pad_id`` defaults to ``eos_id`` (Llama ships no pad token;
  padded positions are masked anyway).

  Attributes:
    tokenizer: the wrapped ``tokenizers.Tokenizer``.
    special_tokens: ``{text: id}`` of the special (control) tokens.
  """

  def __init__(self, tokenizer, eos_id, bos_id=None, pad_id=None, source='tokenizer'):
    self.tokenizer = tokenizer
    self.vocab_size = int(tokenizer.get_vocab_size(with_added_tokens=True))
    self.special_tokens = {t.content: int(i)
                           for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
    for field, value in (('eos_id', eos_id), ('bos_id', bos_id), ('pad_id', pad_id)):
      if value is not None and not 0 <= int(value) < self.vocab_size:
        raise ValueError(f'{source}: {field}={value} lies outside the vocabulary '
                         f'[0, {self.vocab_size}).')
    if eos_id is None:
      raise ValueError(f'{source}: the tokenizer has no EOS token; set eos_token in '
                       'tokenizer_config.json (or tokenizer.ggml.eos_token_id in a GGUF).')
    self.eos_id = int(eos_id)
    self.bos_id = None if bos_id is None else int(bos_id)
    self.pad_id = self.eos_id if pad_id is None else int(pad_id)

  def token_to_id(self, token):
    """The id of one token's text (e.g. ``'<|im_end|>'``), or None if it is not in the vocab."""
    return self.tokenizer.token_to_id(token)

  def encode(self, text: str) -> list[int]:
    """Ids of ``text``; no bos/eos added (special-token text in ``text`` is parsed)."""
    if not isinstance(text, str):
      raise ValueError(f'HFTokenizer.encode expects a str, got {type(text).__name__}: '
                       f'{text!r:.80}.')
    return self.tokenizer.encode(text, add_special_tokens=False).ids

  def decode(self, ids: Sequence[int]) -> str:
    """Text of ``ids`` with special tokens (pad/bos/eos/chat markers) dropped."""
    ids = [int(i) for i in ids]
    for i in ids:
      if not 0 <= i < self.vocab_size:
        raise ValueError(f'Token id {i} is outside [0, {self.vocab_size}) of the tokenizer'
                         + _PADDED_HINT)
    return self.tokenizer.decode(ids, skip_special_tokens=True)
