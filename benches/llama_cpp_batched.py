"""The ceiling of benches/decode.rs's "agents at once" table: llama.cpp's own batched decode on the
same GGUF, through llama-cpp-python's low-level API (no sampling, no grammar, no scheduling).
Decodes STEPS tokens for one sequence, then for SEQUENCES sequences a token each per decode, and
prints one JSON line: {"one": tok/s, "batched": tok/s}."""
import json
import os
import sys
import time

import llama_cpp as L

path, sequences = sys.argv[1], int(sys.argv[2])
STEPS, PROMPT = 64, 16
L.llama_backend_init()
model = L.llama_model_load_from_file(path.encode(), L.llama_model_default_params())
params = L.llama_context_default_params()
params.n_ctx, params.n_batch, params.n_seq_max = 4096, 512, sequences
params.n_threads = params.n_threads_batch = os.cpu_count() or 1
ctx = L.llama_init_from_model(model, params)
batch = L.llama_batch_init(512, 0, sequences)


def put(i, token, pos, seq, logits):
    batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
    batch.seq_id[i][0], batch.logits[i] = seq, logits


def rate(count):
    L.llama_memory_clear(L.llama_get_memory(ctx), True)
    for seq in range(count):
        for p in range(PROMPT):
            put(seq * PROMPT + p, 100 + p + seq, p, seq, p == PROMPT - 1)
    batch.n_tokens = count * PROMPT
    assert L.llama_decode(ctx, batch) == 0
    started = time.perf_counter()
    for step in range(STEPS):
        for seq in range(count):
            put(seq, 200 + step, PROMPT + step, seq, True)
        batch.n_tokens = count
        assert L.llama_decode(ctx, batch) == 0
    return count * STEPS / (time.perf_counter() - started)


rate(1)  # warm-up
print(json.dumps({"one": rate(1), "batched": rate(sequences)}))
