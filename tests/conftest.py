"""Four host CPU devices for the data-parallel tests, set before JAX starts its backend, and
one persistent compilation cache for the suite.

The suite compiles many small programs, most of them more than once: the same smoke model's
steps in several test files, in both xdist workers and in the ``experiments.main``
subprocesses that the end-to-end tests start (they inherit the environment set here), and
again in the next run of the suite, from this checkout or a fresh clone elsewhere (a clean
clone ran in 4 min against 11 with the cache empty; entries copied in from another cache
directory were not reused). The cache is
``CURE_JAX_TEST_CACHE`` (default: ``$XDG_CACHE_HOME/cure-jax/xla-tests``, else
``~/.cache/cure-jax/xla-tests``); ``CURE_JAX_TEST_CACHE=''`` turns it off. A cached program
is XLA's own output for the same HLO, flags and devices, so no result depends on it; a
changed program is a new entry (measured here: 11 min with an empty cache, 4 min warm).

XLA's optimisations stay on: with ``JAX_DISABLE_MOST_OPTIMIZATIONS=1`` for the whole suite
(every test but the three fixture modules) an empty-cache run took 16 min 0 s against 14 min
10 s on the same 2-core machine, the seeds-axis protocol test 179 s against 35 s: the suite's
time goes to running programs more than to LLVM. Only the GROGU direction checks, which
compile large programs and run them once, lower LLVM's level for themselves.
"""
import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')

_CACHE = os.environ.get('CURE_JAX_TEST_CACHE', os.path.join(
    os.environ.get('XDG_CACHE_HOME') or os.path.expanduser(os.path.join('~', '.cache')),
    'cure-jax', 'xla-tests'))
if _CACHE:
  # Environment, not jax.config: the subprocesses the tests start read it too.
  os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', _CACHE)
  # Every program, however quick to compile: the suite's are small and many.
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')

import jax  # noqa: E402

jax.config.update('jax_num_cpu_devices', 4)
