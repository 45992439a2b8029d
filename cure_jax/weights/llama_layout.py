"""The Llama tensor layout shared by the checkpoint importers.

A checkpoint is read into :class:`Checkpoint`: an :class:`~cure_jax.models.causal_lm.LMConfig`
and, per parameter of :class:`~cure_jax.models.causal_lm.CausalLM` (a path tuple such as
``('layers_0', 'self_attn', 'q_proj', 'kernel')``), a :class:`LazyTensor` that reads it as
float32 in Flax orientation only when asked, so that a sharded placement never holds more
than one tensor on the host.
"""
import collections.abc
import dataclasses
from typing import Any, Callable, Optional

import numpy as np

LINEARS = {'self_attn': ('q_proj', 'k_proj', 'v_proj', 'o_proj'),
           'mlp': ('gate_proj', 'up_proj', 'down_proj')}
NORMS = ('input_layernorm', 'post_attention_layernorm')


@dataclasses.dataclass(frozen=True)
class LazyTensor:
  """A float32 tensor of known ``shape`` produced by ``read()`` on demand."""
  shape: tuple
  read: Callable[[], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  """What an importer found: architecture, lazy tensors, tokenizer and chat template text."""
  config: Any                    # LMConfig
  tensors: dict                  # path tuple -> LazyTensor (Flax orientation)
  tokenizer: Any                 # HFTokenizer
  chat_template: Optional[Any]   # the checkpoint's jinja template (str / list) or None
  source: str


def hf_shapes(cfg):
  """``{path: shape}`` of every parameter in HF (torch) orientation: Linear ``(out, in)``."""
  n, k, h, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.d_model
  linear_out_in = {'q_proj': (n * h, d), 'k_proj': (k * h, d), 'v_proj': (k * h, d),
                   'o_proj': (d, n * h), 'gate_proj': (cfg.d_ff, d), 'up_proj': (cfg.d_ff, d),
                   'down_proj': (d, cfg.d_ff)}
  shapes = {('embed_tokens', 'embedding'): (cfg.vocab_size, d), ('norm', 'scale'): (d,)}
  if not cfg.tie_embeddings:
    shapes[('lm_head', 'kernel')] = (cfg.vocab_size, d)
  for i in range(cfg.num_layers):
    for block, names in LINEARS.items():
      for name in names:
        shapes[(f'layers_{i}', block, name, 'kernel')] = linear_out_in[name]
    for name in NORMS:
      shapes[(f'layers_{i}', name, 'scale')] = (d,)
  return shapes


def is_kernel(path):
  return path[-1] == 'kernel'


def lazy_from_hf(path, shape_hf, read_hf, where):
  """A LazyTensor in Flax orientation from a reader of the HF-oriented tensor.

  ``read_hf()`` is checked against ``shape_hf``; ``where`` names the file and tensor in errors.
  """
  def read():
    w = np.asarray(read_hf())
    if tuple(w.shape) != tuple(shape_hf):
      raise ValueError(f'{where}: shape {tuple(w.shape)} does not match {tuple(shape_hf)} '
                       'implied by the model configuration; the file is corrupt or belongs '
                       'to another model.')
    w = w.astype(np.float32)
    return np.ascontiguousarray(w.T) if is_kernel(path) else w
  shape = tuple(reversed(shape_hf)) if is_kernel(path) else tuple(shape_hf)
  return LazyTensor(shape, read)


def flatten(tree, prefix=()):
  """Nested mappings -> ``(path tuple, leaf)`` pairs (the inverse of :func:`unflatten`)."""
  for key, value in tree.items():
    if isinstance(value, collections.abc.Mapping):
      yield from flatten(value, prefix + (key,))
    else:
      yield prefix + (key,), value


def unflatten(flat):
  """``{path tuple: leaf}`` -> nested dicts (the ``'params'`` collection)."""
  tree = {}
  for path, leaf in flat.items():
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = leaf
  return tree


def llama3_rope_divisors(head_dim, base, scaling):
  """Per-frequency divisors of llama3 ``rope_scaling`` (as HF ``_compute_llama3_parameters``).

  Wavelengths above ``original_max / low_freq_factor`` are divided by ``factor``, those below
  ``original_max / high_freq_factor`` kept, and the band between interpolated smoothly.
  """
  missing = [k for k in ('factor', 'low_freq_factor', 'high_freq_factor',
                         'original_max_position_embeddings') if k not in scaling]
  if missing:
    raise ValueError(f'rope_scaling of type llama3 lacks {missing}.')
  factor = float(scaling['factor'])
  low, high = float(scaling['low_freq_factor']), float(scaling['high_freq_factor'])
  old_len = float(scaling['original_max_position_embeddings'])
  inv_freq = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
  wavelen = 2 * np.pi / inv_freq
  scaled = np.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
  smooth = (old_len / wavelen - low) / (high - low)
  smoothed = (1 - smooth) * scaled / factor + smooth * scaled
  medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
  scaled = np.where(medium, smoothed, scaled)
  return tuple(float(x) for x in inv_freq / scaled)
