"""Where arrays live: the device mesh, batches split over it, and parameters (with their
optimizer state) replicated or FSDP-sharded.

Meshes use Auto axis types (``jax.make_mesh`` defaults to Explicit in JAX 0.10, which makes a
Linen ``Conv`` on a batch-sharded input raise ``ShardingTypeError``). A mesh is 1-D over
``data`` (every device a data-parallel replica), or ``(data, fsdp)`` when ``fsdp`` devices
share one copy of the parameters. Batches are split over every axis but ``seeds``.

Several models trained or unlearned together (the protocol's K models, a method's runs) use
a ``(seeds, data)`` mesh (:func:`make_seeds_mesh`): their stacked arrays are split over
``seeds`` (one or more models per device group) and each model's batch over ``data``.

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
SEEDS_AXIS = 'seeds'
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


def make_seeds_mesh(seed_devices=0, devices=None):
  """A ``(seeds, data)`` mesh over ``devices`` (default: all): ``seed_devices`` groups of
  devices along ``seeds`` (0: every device its own group), each group one model's
  data-parallel replicas along ``data``."""
  devices = jax.devices() if devices is None else list(devices)
  seeds = seed_devices or len(devices)
  if seeds < 1 or len(devices) % seeds:
    raise ValueError(f'config.seed_devices={seed_devices} must divide the {len(devices)} '
                     f'devices; use a divisor of {len(devices)} (0: one per device).')
  grid = np.asarray(devices).reshape(seeds, len(devices) // seeds)
  return Mesh(grid, (SEEDS_AXIS, DATA_AXIS), axis_types=(AxisType.Auto, AxisType.Auto))


def seeds_size(mesh):
  """Devices along ``seeds`` (1 for a mesh without that axis)."""
  return dict(zip(mesh.axis_names, mesh.devices.shape)).get(SEEDS_AXIS, 1)


def data_size(mesh):
  """Devices one model's batch is split over: every axis but ``seeds``."""
  return mesh.devices.size // seeds_size(mesh)


def seeds_sharded(mesh, batches=False):
  """Stacked per-model arrays: the leading (model) axis split over ``seeds`` (``batches``:
  and each model's batch, axis 1, over the other axes); replicated on a mesh without
  ``seeds``."""
  if SEEDS_AXIS not in mesh.axis_names:
    return replicated(mesh)
  if not batches:
    return NamedSharding(mesh, P(SEEDS_AXIS))
  return NamedSharding(mesh, P(SEEDS_AXIS, *batch_sharded(mesh).spec))


def stack_models(trees, mesh, batches=False):
  """Per-model trees stacked along a new axis 0 and placed by :func:`seeds_sharded`; the
  list is padded with copies of its first tree to a multiple of the ``seeds`` axis (callers
  drop those models' outputs)."""
  trees = list(trees) + [trees[0]] * (-len(trees) % seeds_size(mesh))
  stacked = jax.tree.map(lambda *x: np.stack([np.asarray(v) for v in x]), *trees)
  where = seeds_sharded(mesh, batches)
  return put(stacked, jax.tree.map(lambda _: where, stacked))


def over_models(fn, in_axes, mesh):
  """``fn`` mapped over the stacked models of its ``in_axes == 0`` arguments.

  On a mesh with a ``seeds`` axis the models are split over it (``shard_map``, manual on
  ``seeds`` only: each model's batch stays auto-partitioned over ``data``); within a device
  group several models are ``vmap``-ped and a single one runs the unbatched program, so one
  model per device computes exactly what it computes alone. Without that axis: ``vmap``.
  Outputs are stacked along axis 0; the model count must divide over ``seeds``."""
  batched = jax.vmap(fn, in_axes=in_axes)
  if SEEDS_AXIS not in mesh.axis_names:
    return batched

  def local(*args):
    count = next(jax.tree.leaves(a)[0].shape[0] for a, ax in zip(args, in_axes)
                 if ax == 0 and jax.tree.leaves(a))
    if count > 1:
      return batched(*args)
    one = [jax.tree.map(lambda x: x[0], a) if ax == 0 else a for a, ax in zip(args, in_axes)]
    return jax.tree.map(lambda x: x[None], fn(*one))
  specs = tuple(P(SEEDS_AXIS) if ax == 0 else P() for ax in in_axes)
  # The abstract mesh: inside, constraints name it (:func:`traced_mesh`).
  return jax.shard_map(local, mesh=mesh.abstract_mesh, in_specs=specs,
                       out_specs=P(SEEDS_AXIS), axis_names=frozenset({SEEDS_AXIS}),
                       check_vma=False)


def traced_mesh(mesh):
  """The mesh a sharding constraint in traced code names: inside :func:`over_models` the
  context's abstract mesh (``seeds`` manual there), else ``mesh``."""
  context = jax.sharding.get_abstract_mesh()
  return mesh if context.empty else context


def replicated(mesh):
  return NamedSharding(mesh, P())


def batch_sharded(mesh, batch_axis=0):
  """The batch axis split over every mesh axis but ``seeds`` (data parallel)."""
  axes = tuple(a for a in mesh.axis_names if a != SEEDS_AXIS)
  axes = axes[0] if len(axes) == 1 else axes
  return NamedSharding(mesh, P(*([None] * batch_axis), axes))


def check_batch_size(batch_size, mesh, what='config.batch_size'):
  n = data_size(mesh)
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
