"""Model loading shared by embed and score, so neither imports the other: the offline default
models (MiniLM, SmolLM2 GGUF) and any HF id or path, devices and dtypes, ONNX sessions (the
MiniLM export and the proxy LM body), tokenizers, the fastText language-ID model."""
