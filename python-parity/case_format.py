"""The names both sides of the case format use: generate.py writes cases with them, verify.py checks any
case directory (golden/ too) against them. Here rather than in either, so that the verifier needs neither
the generator (torch) nor the live table (which does not describe golden/)."""

TASKS = ("causal-lm", "seq-cls", "seq2seq-lm")
# Base-model cases have method NONE: no adapter, io's logits are the plain model's output.
NONE = "NONE"
BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed batch
MAX_NEW_TOKENS = 6  # greedy_ids: generate(max_new_tokens=6, do_sample=False) on batch row 0
