"""The machine record in results.json and the reproduction check that reads it."""
import json

import pytest

from benchmarks import protocol as protocol_bench
from cure_jax.classification import tables
from cure_jax.infra import fingerprint, host
from tests import helpers

X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 sha_ni rdrand
processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx512f
"""
ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes crc32 asimddp sve i8mm bf16
CPU implementer\t: 0x41
"""


def _meta(isa, backend='cpu', jax_version='0.10.2'):
  return {'backend': backend, 'device_kind': 'cpu', 'device_count': 1, 'jax': jax_version,
          'host': {'machine': 'x86_64', 'cpu': 'x', 'vector_isa': isa, 'cpu_count': 2}}


def test_cpuinfo_gives_the_model_and_only_the_vector_flags_of_the_first_processor():
  assert host.parse_cpuinfo(X86) == ('AMD EPYC 7B13',
                                     ['avx', 'avx2', 'f16c', 'fma', 'sse4_1', 'sse4_2'])
  assert host.parse_cpuinfo(ARM) == (None, ['asimd', 'asimddp', 'bf16', 'i8mm', 'sve'])
  assert host.parse_cpuinfo('') == (None, None)


def test_describe_reads_the_file_and_survives_its_absence(tmp_path):
  path = tmp_path / 'cpuinfo'
  path.write_text(X86)
  got = host.describe(str(path))
  assert got['cpu'] == 'AMD EPYC 7B13' and 'avx2' in got['vector_isa'] and got['cpu_count']
  missing = host.describe(str(tmp_path / 'none'))
  assert missing['vector_isa'] is None and missing['machine']


def test_run_metadata_records_the_host():
  meta = fingerprint.run_metadata(helpers.smoke_config())
  assert set(meta['host']) == {'machine', 'cpu', 'vector_isa', 'cpu_count'}


@pytest.mark.parametrize('other, expected', [
    (_meta(['avx', 'avx2', 'fma']), 'bit for bit'),
    (_meta(['avx', 'avx2', 'avx512f', 'fma']), 'differs in vector_isa'),
    (_meta(['avx', 'avx2', 'fma'], jax_version='0.10.3'), 'differs in jax'),
    (_meta(['avx', 'avx2', 'fma'], backend='gpu'), 'differs in backend'),
    ({'backend': 'cpu'}, 'does not record'),
])
def test_compare_says_whether_the_rows_can_agree_bit_for_bit(other, expected):
  assert expected in host.compare(_meta(['avx', 'avx2', 'fma']), other)


def _row(seed, retain, forget=0.0):
  return {'scenario': '1', 'method': 'ghr', 'setting': 'forget', 'status': 'ok',
          'model_seed': seed, 'seed': seed, 'retain_acc': retain, 'forget_acc': forget}


def test_identical_rows_counts_equal_runs_among_the_shared_ones():
  published = [_row(0, 0.9), _row(1, 0.8), _row(2, 0.7)]
  rerun = [_row(0, 0.9), _row(1, 0.81), _row(3, 0.7)]
  assert tables.identical_rows(published, rerun) == (1, 2)


def test_protocol_check_prints_band_identity_and_arithmetic(tmp_path):
  reference = {'meta': _meta(['avx', 'avx2', 'fma']), 'rows': [_row(0, 0.9), _row(1, 0.8)]}
  (tmp_path / 'results.json').write_text(json.dumps(
      {'meta': _meta(['avx', 'avx2', 'avx512f', 'fma']), 'rows': [_row(0, 0.9), _row(1, 0.5)]}))
  text = protocol_bench.check_table(reference, str(tmp_path))
  assert '1 of 2 (scenario, method, metric) means within' in text
  assert '1 of 2 shared runs identical' in text
  assert 'differs in vector_isa' in text
  assert 'OUTSIDE: scenario 1 ghr retain_acc: published 0.850 ± 0.050, rerun 0.700' in text


def test_protocol_refuses_an_unreadable_reference_before_running(tmp_path):
  with pytest.raises(SystemExit, match='is not a readable results.json'):
    protocol_bench._load_reference(str(tmp_path / 'missing.json'))
  (tmp_path / 'bad.json').write_text('{"meta": {}}')
  with pytest.raises(SystemExit, match='--reference=.*bad.json'):
    protocol_bench._load_reference(str(tmp_path / 'bad.json'))
