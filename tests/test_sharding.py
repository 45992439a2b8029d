"""FSDP shardings on 4 host CPU devices (conftest): the rule, and sharded LM fine-tuning and
GROGU-fast directions equal to the single-device results."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from cure_jax.infra import sharding
from cure_jax.unlearning import losses
from cure_jax.unlearning.grogu import fast as grogu_fast
from cure_jax.models.causal_lm import CausalLM

from tests import sharded_steps, tolerances

pytestmark = pytest.mark.skipif(len(jax.devices()) < 4, reason='needs 4 (host) devices')


def _assert_close(got, want, rtol=sharded_steps.LM_RTOL):
  got, want = jax.device_get(got), jax.device_get(want)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
    sharded_steps.assert_close(g, w, rtol, jax.tree_util.keystr(path))


@pytest.mark.parametrize('shape,size,min_size,expected', [
    ((64, 32), 4, 256, P('fsdp')),               # largest dim first
    ((32, 64), 4, 256, P(None, 'fsdp')),
    ((8, 6, 64), 4, 256, P(None, None, 'fsdp')),
    ((64, 6, 8), 4, 256, P('fsdp')),
    ((6, 8), 4, 1, P(None, 'fsdp')),            # largest (8) divisible
    ((10, 8), 4, 1, P(None, 'fsdp')),           # largest (10) not divisible: next
    ((10, 6), 4, 1, P()),                        # nothing divisible
    ((32,), 4, 256, P()),                        # small: replicated
    ((), 4, 0, P()),                             # scalars (step counts)
    ((64, 32), 1, 0, P()),                       # axis of one device
])
def test_leaf_spec(shape, size, min_size, expected):
  assert sharding.leaf_spec(shape, 'fsdp', size, min_size) == expected


def test_make_mesh_axes_and_errors():
  mesh = sharding.make_mesh(fsdp=2, devices=jax.devices()[:4])
  assert mesh.axis_names == ('data', 'fsdp') and mesh.devices.shape == (2, 2)
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
  assert sharding.fsdp_axis(mesh) == 'fsdp'
  assert sharding.fsdp_axis(sharding.make_mesh(fsdp=1, devices=jax.devices()[:4])) == 'data'
  with pytest.raises(ValueError, match='fsdp=3 must be >= 1 and divide the 4 devices'):
    sharding.make_mesh(fsdp=3, devices=jax.devices()[:4])
  with pytest.raises(ValueError, match="sharding mode 'zero'"):
    sharding.shardings({}, mesh, 'zero')


def test_optimizer_state_follows_parameters():
  mesh = sharding.make_mesh(fsdp=4, devices=jax.devices()[:4])
  params = sharded_steps.lm_params()
  opt_state = jax.eval_shape(optax.adamw(1e-3).init, params)
  p_sh = sharding.shardings(params, mesh, 'fsdp', min_size=256)
  o_sh = sharding.shardings(opt_state, mesh, 'fsdp', min_size=256)
  adam = o_sh[0]
  assert adam.mu == p_sh and adam.nu == p_sh
  assert adam.count.spec == P()
  assert p_sh['layers_0']['mlp']['down_proj']['kernel'].spec == P('fsdp')       # 64 x 32
  assert p_sh['layers_0']['self_attn']['k_proj']['kernel'].spec == P('fsdp')    # 32 x 16
  assert p_sh['embed_tokens']['embedding'].spec == P('fsdp')                    # 64 x 32
  assert p_sh['norm']['scale'].spec == P()
  replicated = sharding.shardings(params, mesh, 'replicated')
  assert all(s.spec == P() for s in jax.tree.leaves(replicated))


@pytest.fixture(scope='module')
def single_device_lm():
  return sharded_steps.run_lm(sharding.make_mesh(devices=jax.devices()[:1]), 'replicated')


@pytest.mark.parametrize('fsdp,mode', [(1, 'fsdp'), (2, 'fsdp'), (1, 'replicated')])
def test_sharded_finetune_step_equals_single_device(single_device_lm, fsdp, mode):
  mesh = sharding.make_mesh(fsdp=fsdp, devices=jax.devices()[:4])
  params, opt_state, step_losses = sharded_steps.run_lm(mesh, mode)
  kernel = params['layers_1']['mlp']['up_proj']['kernel']                      # 32 x 64
  if mode == 'fsdp':
    assert kernel.sharding.spec == P(None, sharding.fsdp_axis(mesh))
    assert kernel.addressable_shards[0].data.shape == (32, 64 // (4 if fsdp == 1 else 2))
    assert opt_state[0].mu['layers_1']['mlp']['up_proj']['kernel'].sharding == kernel.sharding
  want_params, want_opt, want_losses = single_device_lm
  _assert_close(step_losses, want_losses)
  _assert_close(params, want_params)
  _assert_close(opt_state, want_opt)
  assert not np.allclose(params['layers_1']['mlp']['up_proj']['kernel'],
                         sharded_steps.lm_params()['layers_1']['mlp']['up_proj']['kernel'])


def _grogu_inputs(batch=4, length=8):
  model = CausalLM(sharded_steps.LM)
  vocab = sharded_steps.LM.vocab_size
  rng = np.random.default_rng(5)
  tokens = rng.integers(0, vocab, (batch, length)).astype(np.int32)
  teacher = (3.0 * rng.normal(size=(batch, length, vocab))).astype(np.float32)
  mask = np.eye(vocab, dtype=bool)[np.roll(tokens, -1, axis=1)]
  weight = np.broadcast_to((np.arange(length) >= 3).astype(np.float32), (batch, length))
  return model, dict(tokens=tokens, teacher=teacher, mask=mask, weight=np.array(weight))


def _grogu(model, params, batch):
  apply_fn = lambda p, t: model.apply({'params': p}, t)

  def per_example(per_position):
    return lambda logits: (jnp.sum(per_position(logits) * batch['weight'], -1)
                           / jnp.sum(batch['weight'], -1))
  loss_h = per_example(lambda z: losses.ghr(z, batch['teacher'], batch['mask']))
  loss_s = per_example(lambda z: losses.gsr(z, batch['teacher'], batch['mask'], 4.0))
  return grogu_fast.grogu_direction_fast(apply_fn, params, batch['tokens'], loss_h, loss_s,
                                         eps=1e-8, w_h=0.3, w_s=0.7)


@pytest.mark.parametrize('fsdp', [2])
def test_sharded_grogu_fast_direction_equals_single_device(fsdp):
  model, batch = _grogu_inputs()
  params = sharded_steps.lm_params()
  fn = lambda p, b: _grogu(model, p, b)
  fast = sharded_steps.FAST_COMPILE
  want = jax.jit(fn, compiler_options=fast)(jax.device_put(params, jax.devices()[0]), batch)

  mesh = sharding.make_mesh(fsdp=fsdp, devices=jax.devices()[:4])
  p_sh = sharding.shardings(params, mesh, 'fsdp', min_size=sharded_steps.MIN_SIZE)
  got = jax.jit(fn, in_shardings=(p_sh, sharding.batch_sharded(mesh)),
                out_shardings=(p_sh, None), compiler_options=fast)(sharding.put(params, p_sh),
                                            sharding.shard_batch(batch, mesh))
  assert got[0]['layers_0']['mlp']['gate_proj']['kernel'].sharding.spec == P(
      None, sharding.fsdp_axis(mesh))
  # One direction; its longest reductions are the per-example inner products over every
  # parameter, which FSDP sums shard by shard.
  terms = sum(np.size(x) for x in jax.tree.leaves(params))
  _assert_close(got, want, tolerances.reordered_sum(terms))
  assert np.abs(np.asarray(want[0]['layers_0']['mlp']['gate_proj']['kernel'])).max() > 0
