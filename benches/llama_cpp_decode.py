"""The llama.cpp baseline of benches/decode.rs: the same GGUF, prompt and token budget, greedy,
single stream, through llama-cpp-python. Prints one JSON line: {"tokens": N, "seconds": S}."""
import json
import os
import sys
import time

from llama_cpp import Llama

model, prompt, max_tokens, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
# As many threads as reagent's engine uses (llama-cpp-python's default is half the cores).
threads = os.cpu_count() or 1
llm = Llama(model_path=model, n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
messages = [{"role": "user", "content": prompt}]
llm.create_chat_completion(messages=messages, max_tokens=8, temperature=0.0)  # warm-up
tokens, seconds = 0, 0.0
for _ in range(runs):
    started = time.perf_counter()
    out = llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=0.0)
    seconds += time.perf_counter() - started
    tokens += out["usage"]["completion_tokens"]
print(json.dumps({"tokens": tokens, "seconds": seconds}))
