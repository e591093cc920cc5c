"""A random-weight GGUF of EXAONE 4.0 1.2B's real configuration, for benches/decode.rs: decoding
speed does not depend on the weights' values, only on the shapes and the quantisation. Written in
F16 with the `gguf` package, then quantised to Q4_K_M by llama.cpp's own quantiser (through
llama-cpp-python), as a published GGUF would be. The vocabulary is synthetic (byte tokens, EXAONE's
special tokens, fillers) at the real size, 102,400.

    python exaone_1_2b.py OUT.gguf
"""
import sys
import tempfile
from pathlib import Path

import gguf
import llama_cpp
import numpy as np

HIDDEN, LAYERS, FFN, HEADS, KV_HEADS, HEAD_DIM, VOCAB = 2048, 30, 4096, 32, 8, 64, 102_400
SPECIAL = ["[PAD]", "[BOS]", "[UNK]", "[|endofturn|]", "[|system|]", "[|user|]", "[|assistant|]", "[|tool|]",
           "<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_result>", "</tool_result>"]


def byte_tokens() -> list[str]:
    """GPT-2's byte-to-character map: the 256 single-byte tokens of a byte-level BPE."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def main() -> None:
    out = Path(sys.argv[1])
    rng = np.random.default_rng(0)
    tokens = SPECIAL + byte_tokens()
    tokens += ["to", "tok"]  # what the two merges make: llama.cpp wants a vocabulary with merges
    tokens += [f"tok{i}" for i in range(VOCAB - len(tokens))]
    with tempfile.TemporaryDirectory() as tmp:
        f16 = Path(tmp) / "exaone-1.2b-f16.gguf"
        writer = gguf.GGUFWriter(str(f16), "exaone4")
        writer.add_name("random-weight EXAONE 4.0 1.2B (benchmark)")
        writer.add_context_length(65_536)
        writer.add_embedding_length(HIDDEN)
        writer.add_feed_forward_length(FFN)
        writer.add_block_count(LAYERS)
        writer.add_head_count(HEADS)
        writer.add_head_count_kv(KV_HEADS)
        writer.add_key_length(HEAD_DIM)
        writer.add_value_length(HEAD_DIM)
        writer.add_rope_dimension_count(HEAD_DIM)
        writer.add_layer_norm_rms_eps(1e-5)
        writer.add_rope_freq_base(1_000_000.0)
        writer.add_vocab_size(VOCAB)
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("exaone4")
        writer.add_token_list(tokens)
        writer.add_token_types([gguf.TokenType.CONTROL if t in SPECIAL else gguf.TokenType.NORMAL for t in tokens])
        writer.add_token_merges(["t o", "to k"])
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(3)
        writer.add_pad_token_id(0)
        writer.add_add_bos_token(False)

        def weight(*shape: int) -> np.ndarray:
            return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)

        writer.add_tensor("token_embd.weight", weight(VOCAB, HIDDEN))
        writer.add_tensor("output_norm.weight", np.ones(HIDDEN, dtype=np.float32))
        writer.add_tensor("rope_freqs.weight", np.ones(HEAD_DIM // 2, dtype=np.float32))
        for i in range(LAYERS):
            for name, shape in [("attn_q", (HEADS * HEAD_DIM, HIDDEN)), ("attn_k", (KV_HEADS * HEAD_DIM, HIDDEN)),
                                ("attn_v", (KV_HEADS * HEAD_DIM, HIDDEN)), ("attn_output", (HIDDEN, HEADS * HEAD_DIM)),
                                ("ffn_gate", (FFN, HIDDEN)), ("ffn_up", (FFN, HIDDEN)), ("ffn_down", (HIDDEN, FFN))]:
                writer.add_tensor(f"blk.{i}.{name}.weight", weight(*shape))
            for name, size in [("attn_q_norm", HEAD_DIM), ("attn_k_norm", HEAD_DIM),
                               ("post_attention_norm", HIDDEN), ("post_ffw_norm", HIDDEN)]:
                writer.add_tensor(f"blk.{i}.{name}.weight", np.ones(size, dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
        partial = out.with_suffix(".partial")
        status = llama_cpp.llama_model_quantize(str(f16).encode(), str(partial).encode(), params)
        if status != 0:
            sys.exit(f"llama.cpp's quantiser failed ({status})")
        partial.rename(out)


if __name__ == "__main__":
    main()
