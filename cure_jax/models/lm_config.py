"""The architecture of :class:`cure_jax.models.causal_lm.CausalLM`, checked when built.

:class:`LMConfig` is frozen and hashable, so a model built from it can be a static argument
of jitted functions; checkpoint importers fill it from a checkpoint's own configuration.
"""
import dataclasses
import numbers
from typing import Optional

from cure_jax.models.dtypes import DTYPES


@dataclasses.dataclass(frozen=True)
class LMConfig:
  """Architecture of :class:`~cure_jax.models.causal_lm.CausalLM`.

  Attributes:
    vocab_size: number of token ids (embedding rows / logits).
    num_layers: transformer blocks.
    d_model: residual stream width; a multiple of ``num_heads`` unless ``explicit_head_dim``.
    num_heads: query heads; head dim is ``d_model // num_heads`` (unless ``explicit_head_dim``)
      and must be even (RoPE).
    num_kv_heads: key/value heads (grouped-query attention); must divide ``num_heads``.
    d_ff: hidden width of the SwiGLU MLP.
    max_len: longest sequence (prompt + generated tokens) the KV cache is built for.
    rope_base: RoPE frequency base (10000 for Llama 2, 100000 for SmolLM2).
    norm_eps: RMSNorm epsilon.
    tie_embeddings: logits from ``embed_tokens.attend`` instead of a separate ``lm_head``.
    dtype: computation dtype name ('float32' or 'bfloat16'); parameters stay float32.
    explicit_head_dim: head dim when a checkpoint sets it apart from ``d_model // num_heads``
      (config.json ``head_dim``, e.g. Mistral-Nemo); q/o projections are then
      ``d_model x num_heads*head_dim``.
    rope_divisors: per-frequency divisors of the RoPE inverse frequencies (``head_dim / 2``
      floats), as llama3 ``rope_scaling`` and GGUF ``rope_freqs`` define them; None: all 1.
    sliding_window: keys a query attends to, its own included (Mistral's ``sliding_window``:
      query ``i`` sees keys ``j`` with ``i - sliding_window < j <= i``); None: all earlier
      keys. Left out of :meth:`to_dict` when None.
  """
  vocab_size: int
  num_layers: int
  d_model: int
  num_heads: int
  num_kv_heads: int
  d_ff: int
  max_len: int
  rope_base: float = 10000.0
  norm_eps: float = 1e-5
  tie_embeddings: bool = True
  dtype: str = 'float32'
  explicit_head_dim: Optional[int] = None
  rope_divisors: Optional[tuple[float, ...]] = None
  sliding_window: Optional[int] = None

  def __post_init__(self):
    for field in ('vocab_size', 'num_layers', 'd_model', 'num_heads', 'num_kv_heads', 'd_ff',
                  'max_len'):
      if getattr(self, field) <= 0:
        raise ValueError(f'LMConfig.{field} must be positive, got {getattr(self, field)}.')
    if self.explicit_head_dim is None and self.d_model % self.num_heads:
      raise ValueError(f'd_model={self.d_model} is not divisible by num_heads={self.num_heads}; '
                       'pick d_model as a multiple of num_heads.')
    if self.head_dim <= 0 or self.head_dim % 2:
      raise ValueError(f'head dim {self.head_dim} (d_model/num_heads or explicit_head_dim) must '
                       'be positive and even for RoPE.')
    if self.rope_divisors is not None:
      # A tuple keeps the config hashable (the model is a static jit argument).
      object.__setattr__(self, 'rope_divisors', tuple(float(d) for d in self.rope_divisors))
    if self.rope_divisors is not None and len(self.rope_divisors) != self.head_dim // 2:
      raise ValueError(f'LMConfig.rope_divisors has {len(self.rope_divisors)} entries; RoPE '
                       f'with head dim {self.head_dim} needs {self.head_dim // 2}.')
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f'num_kv_heads={self.num_kv_heads} must divide num_heads='
                       f'{self.num_heads} (grouped-query attention).')
    if self.dtype not in DTYPES:
      raise ValueError(f'LMConfig.dtype={self.dtype!r}; use one of {list(DTYPES)}.')
    window = self.sliding_window
    if window is not None:
      if isinstance(window, bool) or not isinstance(window, numbers.Integral) or window <= 0:
        raise ValueError(f'LMConfig.sliding_window={window!r} must be a positive int (keys '
                         'attended to, the own one included) or None for full attention.')
      object.__setattr__(self, 'sliding_window', int(window))  # numpy ints: same hash, JSON

  def to_dict(self):
    """The fields as a dict, for fingerprints and the import cache. Fields added after
    models were keyed (``sliding_window``) are left out while unset, so a config without
    them keeps the dict, hence the fingerprint, it had before."""
    out = dataclasses.asdict(self)
    if out['sliding_window'] is None:
      del out['sliding_window']
    return out

  @property
  def head_dim(self):
    if self.explicit_head_dim is not None:
      return self.explicit_head_dim
    return self.d_model // self.num_heads

