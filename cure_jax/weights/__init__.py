"""Checkpoint I/O for causal LMs, below the tasks and independent of them: load Hugging Face
safetensors directories and GGUF files into the Llama-layout model (``pretrained``,
``hf_import``, ``gguf_import``, ``llama_layout``, ``import_checks``), the checkpoint's chat
format (``chat``), and write a model back as either (``export``, ``gguf_export``).
"""
