"""Parameter and optimizer-state shardings: replicated, or FSDP over the mesh.

FSDP (ZeRO-3 style, as big_vision's ``fsdp`` rule): every array with at least ``min_size``
elements is split along its largest dimension that the FSDP axis size divides; smaller ones
(norm scales, step counters) are replicated. XLA inserts the all-gathers / reduce-scatters.
The rule only looks at shapes, so optax moments get the same sharding as their parameters
and one call covers params, optimizer state or a whole train state.

Meshes (:func:`make_mesh`) have axes ``('data', 'fsdp')`` with Auto axis types; the batch is
split over both (:func:`batch_sharding`), i.e. always data-parallel over every device. The
parameters are split over ``fsdp`` when it has more than one device, else over ``data``
(a 1-D mesh from :func:`cure_jax.parallel.make_mesh` works too).

Typical use::

  mesh = sharding.make_mesh(fsdp=1)                       # all devices on 'data'
  state_sh = sharding.shardings(state_shapes, mesh, 'fsdp')  # eval_shape'd train state
  state = jax.jit(create_state, out_shardings=state_sh)(...)
  batch = sharding.shard_batch(host_batch, mesh)
"""
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'
FSDP_AXIS = 'fsdp'
MODES = ('replicated', 'fsdp')
# 2**14 float32 = 64 KiB: below that, gathering costs more than the memory saved.
DEFAULT_MIN_SIZE = 2**14


def make_mesh(fsdp=1, devices=None):
  """A ``(data, fsdp)`` mesh over ``devices`` (default all, every host), Auto axes.

  ``fsdp`` devices share one copy of the parameters; ``len(devices) / fsdp`` such groups are
  data-parallel replicas. ``fsdp=1`` puts every device on ``data``.
  """
  devices = jax.devices() if devices is None else list(devices)
  if fsdp < 1 or len(devices) % fsdp:
    raise ValueError(f'fsdp={fsdp} must be >= 1 and divide the {len(devices)} devices; '
                     f'use a divisor of {len(devices)}.')
  grid = np.asarray(devices).reshape(len(devices) // fsdp, fsdp)
  return Mesh(grid, (DATA_AXIS, FSDP_AXIS), axis_types=(AxisType.Auto, AxisType.Auto))


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
  """``NamedSharding`` per leaf of ``tree`` (arrays or ``jax.ShapeDtypeStruct``s).

  Args:
    tree: parameters, optimizer state or a whole train state (any pytree).
    mesh: from :func:`make_mesh` (or :func:`cure_jax.parallel.make_mesh`).
    mode: 'replicated' (every device holds everything) or 'fsdp'.
    min_size: arrays with fewer elements stay replicated.
  """
  if mode not in MODES:
    raise ValueError(f'sharding mode {mode!r} is not supported; use one of {MODES}.')
  axis = fsdp_axis(mesh)
  size = dict(zip(mesh.axis_names, mesh.devices.shape))[axis]

  def one(leaf):
    shape = tuple(np.shape(leaf))
    if mode == 'replicated':
      return NamedSharding(mesh, P())
    return NamedSharding(mesh, leaf_spec(shape, axis, size, min_size))
  return jax.tree.map(one, tree)


# The names the LM fine-tuning code uses; the rule is the same for both.
param_shardings = shardings
opt_state_shardings = shardings


def batch_sharding(mesh, batch_axis=0):
  """Batch split over every mesh axis (data parallel across all devices)."""
  return NamedSharding(mesh, P(*([None] * batch_axis), tuple(mesh.axis_names)))


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


def shard_batch(batch, mesh, batch_axis=0):
  """Puts a host batch (the same global batch on every process) on the mesh, batch-split."""
  sharding = batch_sharding(mesh, batch_axis)
  n = mesh.devices.size

  def one(x):
    x = np.asarray(x)
    if x.shape[batch_axis] % n:
      raise ValueError(f'batch size {x.shape[batch_axis]} does not divide over the {n} '
                       f'devices of the mesh; use a multiple of {n}.')
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
  return jax.tree.map(one, batch)


def gather(tree):
  """A host numpy copy of (possibly sharded, multi-process) arrays."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)
