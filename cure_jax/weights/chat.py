"""Chat prompts: the checkpoint's own jinja template, or hand-written per-family formats.

A checkpoint that ships a jinja ``chat_template`` has its prompts rendered from it
(:func:`render`), as transformers' ``apply_chat_template(..., add_generation_prompt=True)``
does: same sandboxed environment and globals (``raise_exception``, ``strftime_now``). The
hand-written formats (:func:`format_prompt`) are the fallback for a checkpoint without a
template, and what ``config.data.chat_template=<name>`` forces.

A prompt is plain text ending where the assistant's answer starts; special-token markers
(``<|im_start|>``, ``[INST]``...) are written as text and :class:`~cure_jax.text.tokenizer.
HFTokenizer` turns them into their ids. The bos token is not part of the prompt: the data code
prepends ``tokenizer.bos_id`` when the checkpoint adds one (:func:`render` drops a bos the
template writes itself). The answer is followed by ``tokenizer.eos_id``, which the instruct
checkpoints set to their end-of-turn token.

Names: ``'plain'`` (the question alone), ``'chatml'`` (``<|im_start|>`` turns),
``'smollm2'`` (chatml with SmolLM2-Instruct's default system turn), ``'llama2'``
(``[INST] ... [/INST]``, also Mistral-Instruct), ``'llama3'`` (header tokens).
"""
import datetime
import functools
import json

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.sandbox

TEMPLATE_NAMES = ('plain', 'chatml', 'smollm2', 'llama2', 'llama3')

SMOLLM2_SYSTEM = 'You are a helpful AI assistant named SmolLM, trained by Hugging Face'


def _escape(text):
  # template_string's result is used with str.format(question=...): keep other braces literal.
  return text.replace('{', '{{').replace('}', '}}')


def template_string(name, system=None):
  """The prompt format of ``name`` as a ``str.format`` template with a ``{question}`` field.

  Usable directly as the ``template`` of :func:`cure_jax.data.tofu.encode_qa`.
  """
  if name not in TEMPLATE_NAMES:
    raise ValueError(f'Unknown chat template {name!r}; use one of {TEMPLATE_NAMES}.')
  if name == 'smollm2':
    name, system = 'chatml', SMOLLM2_SYSTEM if system is None else system
  sys_text = None if system is None else _escape(system)
  if name == 'plain':
    return '{question}' if sys_text is None else sys_text + '\n\n{question}'
  if name == 'chatml':
    head = '' if sys_text is None else f'<|im_start|>system\n{sys_text}<|im_end|>\n'
    return head + '<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n'
  if name == 'llama2':
    head = '' if sys_text is None else f'<<SYS>>\n{sys_text}\n<</SYS>>\n\n'
    return '[INST] ' + head + '{question} [/INST]'
  head = ('' if sys_text is None else
          f'<|start_header_id|>system<|end_header_id|>\n\n{sys_text}<|eot_id|>')
  return (head + '<|start_header_id|>user<|end_header_id|>\n\n{question}<|eot_id|>'
          '<|start_header_id|>assistant<|end_header_id|>\n\n')


def format_prompt(name, question, system=None):
  """``question`` as one user turn of template ``name``, ready for the assistant's answer."""
  return template_string(name, system).format(question=question)


def detect(chat_template):
  """The hand-written format closest to a checkpoint's jinja ``chat_template`` (None:
  ``'plain'``): the name a loaded checkpoint reports, and its format if asked by name."""
  if not chat_template:
    return 'plain'
  if isinstance(chat_template, list):  # tokenizer_config may list named templates
    chat_template = ' '.join(str(t.get('template', '')) for t in chat_template
                             if isinstance(t, dict))
  if '<|im_start|>' in chat_template:
    return 'smollm2' if 'SmolLM' in chat_template else 'chatml'
  if '<|start_header_id|>' in chat_template:
    return 'llama3'
  if '[INST]' in chat_template:
    return 'llama2'
  return 'plain'


# --- the checkpoint's own jinja template, rendered as transformers' apply_chat_template ------

_QUESTION_MARK = 'cureJaxQuestionSlot7q'  # the question while rendering; mixed case shows edits


def _generation_tag():
  """transformers' ``{% generation %}`` block (it marks assistant tokens for its masks),
  rendered here as its plain body so templates using it still parse."""

  class GenerationTag(jinja2.ext.Extension):
    tags = {'generation'}

    def parse(self, parser):
      lineno = next(parser.stream).lineno
      body = parser.parse_statements(('name:endgeneration',), drop_needle=True)
      return jinja2.nodes.Scope(body).set_lineno(lineno)

  return GenerationTag


def _raise_exception(message):
  raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
  # As transformers: no HTML escaping (jinja's own tojson escapes <, >, &, ').
  return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                    sort_keys=sort_keys)


def _strftime_now(fmt):
  return datetime.datetime.now().strftime(fmt)


@functools.lru_cache(maxsize=16)
def _compile(source):
  """The template in the environment transformers renders chat templates in (sandboxed,
  ``trim_blocks``/``lstrip_blocks``, loop controls, its globals and ``tojson``), so a
  checkpoint's prompt is the text its own tokenizer would produce."""
  env = jinja2.sandbox.ImmutableSandboxedEnvironment(
      trim_blocks=True, lstrip_blocks=True,
      extensions=[_generation_tag(), jinja2.ext.loopcontrols])
  env.filters['tojson'] = _tojson
  env.globals['raise_exception'] = _raise_exception
  env.globals['strftime_now'] = _strftime_now
  return env.from_string(source)


def select_source(chat_template):
  """The jinja source to render from a checkpoint's ``chat_template``: the string itself, or,
  where tokenizer_config lists named templates, the one named 'default' (as transformers)."""
  if not chat_template or isinstance(chat_template, str):
    return chat_template or None
  if isinstance(chat_template, list):
    chat_template = {t.get('name'): t.get('template') for t in chat_template
                     if isinstance(t, dict)}
  if isinstance(chat_template, dict) and isinstance(chat_template.get('default'), str):
    return chat_template['default']
  names = sorted(map(str, chat_template)) if isinstance(chat_template, dict) else []
  raise ValueError(f'The checkpoint lists chat templates {names} but none named "default"; '
                   f'set config.data.chat_template to one of {list(TEMPLATE_NAMES)}.')


def render(chat_template, question, system=None, bos_token='', eos_token='', date_string=None):
  """``question`` (after an optional ``system`` turn) rendered by the checkpoint's jinja
  ``chat_template`` with ``add_generation_prompt=True``, as transformers renders it.

  ``bos_token`` is the text of the bos the data code prepends (``''`` when the tokenizer adds
  none). A leading ``bos_token`` the template writes itself is removed here, the one place
  that knows both, so the token appears once: the prompt starts after the bos, as the
  hand-written formats do.

  ``date_string``: the day a template's date line shows (Llama-3.x templates use a defined
  ``date_string`` before ``strftime_now``); None: as transformers, today, so the prompt
  changes with the calendar. Runs fix it (``config.data.chat_date``) to stay reproducible.
  """
  source = select_source(chat_template)
  if source is None:
    raise ValueError('The checkpoint has no chat template to render; use format_prompt with '
                     f'one of {list(TEMPLATE_NAMES)}.')
  messages = ([] if system is None else [{'role': 'system', 'content': system}])
  messages.append({'role': 'user', 'content': question})
  try:
    # Only a given date is defined: a template tests `date_string is defined`.
    dated = {} if date_string is None else {'date_string': date_string}
    text = _compile(source).render(
        messages=messages, tools=None, documents=None, add_generation_prompt=True,
        bos_token=bos_token, eos_token=eos_token, **dated)
  except jinja2.exceptions.TemplateError as e:
    raise ValueError(f"The checkpoint's chat template cannot render a prompt "
                     f"({type(e).__name__}: {' '.join(str(e).split())}); set "
                     f'config.data.chat_template to one of '
                     f'{list(TEMPLATE_NAMES)} to use a built-in format.') from None
  if bos_token and text.startswith(bos_token):
    text = text[len(bos_token):]
  return text


def render_template_string(chat_template, system=None, bos_token='', eos_token='',
                           date_string=None):
  """:func:`render` as a ``str.format`` template with a ``{question}`` field (the form the
  data code takes, see :func:`template_string`)."""
  text = render(chat_template, _QUESTION_MARK, system, bos_token, eos_token, date_string)
  if text.count(_QUESTION_MARK) != 1:
    raise ValueError("The checkpoint's chat template does not copy the question into the "
                     'prompt unchanged exactly once; set config.data.chat_template to one of '
                     f'{list(TEMPLATE_NAMES)} to use a built-in format.')
  return _escape(text).replace(_QUESTION_MARK, '{question}')


# --- a loaded checkpoint's prompts (the methods of cure_jax.weights.pretrained.Pretrained) --------

def special_tokens(tokenizer):
  """The ``bos_token``/``eos_token`` texts a checkpoint's template renders with. bos: only the
  one the data code prepends ('' when the checkpoint adds none)."""
  text = tokenizer.tokenizer.id_to_token
  return {'bos_token': '' if tokenizer.bos_id is None else text(tokenizer.bos_id),
          'eos_token': text(tokenizer.eos_id)}


def checkpoint_prompt(lm, question, template=None, system=None):
  """``question`` as the checkpoint ``lm`` (a loaded ``Pretrained``) would prompt it: its
  jinja template, as transformers renders it, or the hand-written format ``template`` / the
  one forced at load, which win over the checkpoint's own."""
  if template or lm.chat_template_forced or not lm.chat_template_source:
    return format_prompt(template or lm.chat_template, question, system)
  return render(lm.chat_template_source, question, system, **special_tokens(lm.tokenizer))


def checkpoint_template_string(lm, system=None, date_string=None):
  """:func:`checkpoint_prompt` as a ``str.format`` template with ``{question}`` (the form the
  data code takes); ``date_string`` fixes a template's date line (:func:`render`)."""
  if lm.chat_template_forced or not lm.chat_template_source:
    return template_string(lm.chat_template, system)
  return render_template_string(lm.chat_template_source, system, date_string=date_string,
                                **special_tokens(lm.tokenizer))
