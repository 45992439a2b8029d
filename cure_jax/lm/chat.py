"""Chat prompt formats of the supported model families, and their detection.

A prompt is plain text ending where the assistant's answer starts; special-token markers
(``<|im_start|>``, ``[INST]``...) are written as text and :class:`~cure_jax.text.tokenizer.
HFTokenizer` turns them into their ids. The bos token is not part of the prompt: the data code
prepends ``tokenizer.bos_id`` when the checkpoint adds one. The answer is followed by
``tokenizer.eos_id``, which the instruct checkpoints set to their end-of-turn token.

Names: ``'plain'`` (the question alone), ``'chatml'`` (``<|im_start|>`` turns),
``'smollm2'`` (chatml with SmolLM2-Instruct's default system turn), ``'llama2'``
(``[INST] ... [/INST]``, also Mistral-Instruct), ``'llama3'`` (header tokens).
"""

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
  """The template name matching a checkpoint's jinja ``chat_template`` (None: ``'plain'``)."""
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
