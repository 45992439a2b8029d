"""Where arrays live: the device mesh, batches split over it, and parameters (with their
optimizer state) replicated or FSDP-sharded.

Meshes use Auto axis types (``jax.make_mesh`` defaults to Explicit in JAX 0.10, which makes a
Linen ``Conv`` on a batch-sharded input raise ``ShardingTypeError``). A mesh is 1-D over
``data`` (every device a data-parallel replica), or ``(data, fsdp)`` when ``fsdp`` devices
share one copy of the parameters. Batches are split over every axis.

FSDP (ZeRO-3 style, as big_vision's ``fsdp`` rule): every array with at least ``min_size``
elements is split along its largest dimension that the FSDP axis size divides; smaller ones
(norm scales, step counters) are replicated, and XLA inserts the all-gathers and
reduce-scatters. The rule only looks at shapes, so optax moments get the sharding of their
parameters and one call covers params, optimizer state or a whole train state::

  mesh = sharding.make_mesh()
  init = sharding.jit_init(create_state, (rng,), mesh, 'fsdp')
  state = init(rng)                            # built where it lives
  batch = sharding.shard_batch(host_batch, mesh)
"""
import jax
import numpy as np
from absl import logging
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'
FSDP_AXIS = 'fsdp'
MODES = ('replicated', 'fsdp')
# 2**14 float32 = 64 KiB: below that, gathering costs more than the memory saved.
DEFAULT_MIN_SIZE = 2**14


def maybe_initialize_distributed(enabled):
  """Multi-host runs call ``jax.distributed.initialize()`` before touching devices."""
  if enabled:
    jax.distributed.initialize()
    logging.info('jax.distributed: process %d of %d', jax.process_index(), jax.process_count())


def make_mesh(devices=None, fsdp=1):
  """A mesh over ``devices`` (default: all devices of all hosts): 1-D ``data`` for
  ``fsdp=1``, else ``(data, fsdp)`` with ``fsdp`` devices sharing one parameter copy."""
  devices = jax.devices() if devices is None else list(devices)
  if fsdp < 1 or len(devices) % fsdp:
    raise ValueError(f'fsdp={fsdp} must be >= 1 and divide the {len(devices)} devices; '
                     f'use a divisor of {len(devices)}.')
  if fsdp == 1:
    return Mesh(np.asarray(devices), (DATA_AXIS,))
  grid = np.asarray(devices).reshape(len(devices) // fsdp, fsdp)
  return Mesh(grid, (DATA_AXIS, FSDP_AXIS), axis_types=(AxisType.Auto, AxisType.Auto))


def replicated(mesh):
  return NamedSharding(mesh, P())


def batch_sharded(mesh, batch_axis=0):
  """The batch axis split over every mesh axis (data parallel across all devices)."""
  axes = DATA_AXIS if mesh.axis_names == (DATA_AXIS,) else tuple(mesh.axis_names)
  return NamedSharding(mesh, P(*([None] * batch_axis), axes))


def check_batch_size(batch_size, mesh, what='config.batch_size'):
  n = mesh.devices.size
  if batch_size % n:
    raise ValueError(f'{what}={batch_size} does not divide over the {n} devices of the mesh; '
                     f'use a multiple of {n}.')


def shard_batch(batch, mesh, batch_axis=0):
  """Puts a host batch (the same global batch on every process) on the mesh, batch-split."""
  sharding = batch_sharded(mesh, batch_axis)

  def put(x):
    x = np.asarray(x)
    check_batch_size(x.shape[batch_axis], mesh, 'batch size')
    if jax.process_count() == 1:
      return jax.device_put(x, sharding)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
  return jax.tree.map(put, batch)


def replicate(tree, mesh):
  return jax.device_put(tree, replicated(mesh))


def fsdp_axis(mesh):
  """The axis parameters are split over: ``fsdp`` if it has >1 device, else ``data``."""
  sizes = dict(zip(mesh.axis_names, mesh.devices.shape))
  if sizes.get(FSDP_AXIS, 1) > 1:
    return FSDP_AXIS
  return DATA_AXIS if DATA_AXIS in sizes else mesh.axis_names[0]


def leaf_spec(shape, axis, axis_size, min_size=DEFAULT_MIN_SIZE):
  """The FSDP PartitionSpec of one array: ``axis`` on its largest divisible dimension."""
  if axis_size <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  # Largest dimension first; among equal sizes the first one (a deterministic choice).
  for dim in sorted(range(len(shape)), key=lambda d: (-shape[d], d)):
    if shape[dim] % axis_size == 0:
      return P(*([None] * dim), axis)
  return P()


def shardings(tree, mesh, mode='fsdp', min_size=DEFAULT_MIN_SIZE):
  """``NamedSharding`` per leaf of ``tree`` (arrays or ``jax.ShapeDtypeStruct``s):
  parameters, optimizer state or a whole train state; ``mode`` 'replicated' or 'fsdp';
  arrays with fewer than ``min_size`` elements stay replicated."""
  if mode not in MODES:
    raise ValueError(f'sharding mode {mode!r} is not supported; use one of {MODES}.')
  axis = fsdp_axis(mesh)
  size = dict(zip(mesh.axis_names, mesh.devices.shape))[axis]

  def one(leaf):
    if mode == 'replicated':
      return NamedSharding(mesh, P())
    return NamedSharding(mesh, leaf_spec(tuple(np.shape(leaf)), axis, size, min_size))
  return jax.tree.map(one, tree)


def place(tree, mesh, mode='replicated'):
  """``tree`` placed on ``mesh`` by the rule of :func:`shardings` (:func:`put`: host arrays
  go slice by slice, so no device ever holds more than its own share)."""
  return put(tree, shardings(tree, mesh, mode))


def jit_init(fn, example_args, mesh, mode='replicated'):
  """``fn`` (a model init, a train state) jitted with ``out_shardings`` from
  :func:`shardings` of its abstract value for ``example_args``: every array is created on
  the devices that hold it instead of on one device and then moved. Keep the result to reuse
  its compilation (a ResNet's init compiles in seconds and then runs in milliseconds)."""
  out = shardings(jax.eval_shape(fn, *example_args), mesh, mode)
  return jax.jit(fn, out_shardings=out)


def put(tree, tree_shardings):
  """Places host (numpy) or device arrays at their shardings; works with several processes.

  Every process must pass the same global values (e.g. parameters from the same seed).
  """
  def one(x, s):
    # Global arrays reshard on device; host-local values go through the host, so that each
    # process supplies exactly its own devices' slices.
    if isinstance(x, jax.Array) and (jax.process_count() == 1 or not x.is_fully_addressable):
      return jax.device_put(x, s)
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, s, lambda idx: x[idx])
  return jax.tree.map(one, tree, tree_shardings)
