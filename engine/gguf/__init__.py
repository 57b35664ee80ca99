"""GGUF export through llama.cpp itself: llama.cpp's own converter writes the file, its own
quantiser makes the K-quants users run, and llama.cpp (through llama-cpp-python) loads every
export and is compared with the Hugging Face model it came from before the user ships it.

- ``runtime``: where the pinned llama.cpp (the compiled library and its converter kit) is, and
  one line saying why it is not there when it is not;
- ``quants``: the file types offered, with the agreement each must keep;
- ``convert``: llama.cpp's converters in a child process (a model folder or a PEFT LoRA);
- ``quantize``: ``llama_model_quantize`` from the f16 file, with progress and its fallbacks;
- ``agreement``: the exported file in llama.cpp against the Hugging Face model, on probe prompts;
- ``export``: a model folder as a checked GGUF file; ``adapter``: an adapter from the library,
  merged or as a GGUF LoRA, with its Ollama Modelfile.
"""
