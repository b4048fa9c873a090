#!/usr/bin/env python3
"""Writes peft4j parity cases (reference outputs of HF transformers + PEFT) from ONE table of rows.

    generate.py OUT_DIR [--seed N] [--only NAME...]     write models/, cases/, manifest.json
    generate.py --list                                  print the table
    generate.py --verify DIR                            check a directory (generated or golden) for the format

The rows are in table.py (to add a method's live rows, edit that); the format check is verify.py. Run it
with the interpreter that setup_env.sh prints (pinned torch / transformers / peft). The output has
exactly the layout of python-parity/golden/ (see README.md there and python-parity/README.md):

    manifest.json                  versions, seed, the case entries (each equal to its case.json), failed rows
    models/<model>/                config.json + model.safetensors (+ generation_config.json) from save_pretrained
    cases/<name>/case.json         what the case is
    cases/<name>/adapter/          adapter_config.json + adapter_model.safetensors from PEFT's save_pretrained
    cases/<name>/io.safetensors    the batch and the reference outputs

Seeds (the golden cases' own recipe: --seed 0 writes the golden models and batches byte for byte, and
their reference numbers to ~1e-6; the last bits depend on the CPU):
    torch.manual_seed(seed)        immediately before Model._from_config(config)     (every model)
    torch.manual_seed(seed + 100)  before drawing the batch                          (every row)
    torch.manual_seed(seed + 1000) immediately before peft.get_peft_model            (adapter rows)
    torch.Generator().manual_seed(seed + 2000 + k), k < 4: nudges of the step-3 sensitivity reruns (rows
                                   that train; own generators: they decide step3_tolerance only; SEED_NUDGE)
    torch.manual_seed(seed + 3000) before drawing a data-driven init's data (rows with init_data)
A row's files therefore depend only on the seed and the row, not on which other rows run.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Optional

from case_format import BASE_ADAPTER, MAX_NEW_TOKENS, NONE
from table import ARCHS, MODELS, ROWS, BatchTokens, Row, list_rows
from verify import verify

# ----------------------------------------------------------------------------------------------------
# Constants of generation
# ----------------------------------------------------------------------------------------------------

BATCH, SEQ, TARGET_LEN, NUM_PADS, FIRST_TOKEN = 2, 9, 5, 3, 3
OPTIMIZER = {"name": "adamw", "lr": 0.01, "betas": [0.9, 0.999], "eps": 1e-08, "weight_decay": 0.01,
             "steps": 3,
             "note": "same batch each step; loss is the model's own loss with labels; dropout is zero everywhere"}
TASK_TYPES = {"causal-lm": "CAUSAL_LM", "seq-cls": "SEQ_CLS", "seq2seq-lm": "SEQ_2_SEQ_LM"}
SEED_BATCH, SEED_ADAPTER, SEED_INIT_DATA = 100, 1000, 3000
# The reference's own conditioning after training (rows that train; README "Step-3 tolerance"). PEFT's
# results after 3 AdamW steps can hang on rounding: Adam divides each gradient entry by its own magnitude, so
# an entry that is ~0 up to rounding (gpt2's key bias under bias="all", whose exact gradient is 0) takes a
# +-lr step whose sign rounding picks, and some rows carry that into the logits (1e-4..1e-3, at times a
# bifurcation of 0.05). No independent implementation can match such a row at 1e-4 / 1e-5, so the 3 steps
# (+ merge) are rerun from the same initial state with every trainable parameter nudged by one ulp, in
# NUDGE_DIRECTIONS pseudo-random sign patterns (torch.Generator seeded seed + SEED_NUDGE + k, so a row's files
# still depend only on the seed and the row), and compared with the reference over STEP3_KEYS. Where
# A = max over elements and directions of FACTOR * |nudged - reference| - rtol * |reference| exceeds the
# case atol, case.json gets step3_tolerance = {rtol: case rtol, atol: A rounded up to 2 significant digits},
# which runners use for those keys only; every other row keeps the case tolerance. (A rather than
# FACTOR * max|nudged - reference|: what rtol already covers needs no atol, e.g. merged_logits of the
# tied-embedding rows, ~630, whose 2e-4 deviations are 3e-7 relative.)
# Why FACTOR 4 and 4 directions, measured with peft4j's native runner over seeds 0, 1234, 1-6 (117 rows with
# the field): a 1-ulp nudge of the inputs stands in for the rounding differences of an independent
# implementation, which arise in every operation of every step and took peft4j up to 3.0x the 4-direction D;
# the directions themselves spread widely (1e-4..8e-4 over 8 directions for lora_gpt2_s2_layers_pattern,
# seed 4), and with 2 directions factor 4 let that row fail (2.2e-3 > 4 x 5e-4). 4 x (4 directions) passed
# all 117, the closest at 1.33x margin. A real bug (a wrong op, scale, step) moves these outputs by far more
# than the typical loosened atol (1e-5..1e-3).
SEED_NUDGE, NUDGE_DIRECTIONS, STEP3_TOLERANCE_FACTOR = 2000, 4, 4.0
SENSITIVITY: dict = {}  # row name -> what was measured, for the log line of the row
STEP3_KEYS = ("step_losses", "step3/", "step3_logits", "merged_logits")  # keys step3_tolerance applies to
# One intra-op thread: these tensors are tiny, so a second thread only adds synchronisation (measured on
# 2 loaded cores: 4 s with 1 thread, 32 s with 2), and results then do not depend on the machine's cores.
NUM_THREADS = int(os.environ.get("PEFT4J_PARITY_THREADS", "1"))


# ----------------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------------

def _torch():
    import torch
    import transformers

    torch.set_num_threads(NUM_THREADS)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return torch


def _dump_json(obj, path: Path):
    path.write_text(json.dumps(obj, indent=1))


def build_model(name: str, seed: int, out_dir: Path, write: bool):
    """The f32 model the references of MODELS[name] are computed with; writes models/<name>/ if `write`.

    f32 specs: the freshly initialised model itself (bitwise what model.safetensors holds).
    bf16 specs: the f32 init is cast to bf16 and saved; the reference model is then loaded back from
    those files with dtype float32, i.e. f32 compute on bf16-representable weights (non-weight buffers
    such as rotary inv_freq stay f32, as they are when anyone loads the files)."""
    torch = _torch()
    import transformers

    spec = MODELS[name]
    cfg_cls, model_cls, _ = ARCHS[spec.arch]
    d = out_dir / "models" / name
    config = getattr(transformers, cfg_cls)(**spec.config)
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)._from_config(config)
    if write:
        if d.exists():
            shutil.rmtree(d)
        model.to(getattr(torch, spec.weights_dtype)).save_pretrained(d)
    if spec.weights_dtype == "float32":
        return model.eval()
    model = getattr(transformers, model_cls).from_pretrained(d, dtype=torch.float32)
    # as if built in memory: PEFT writes name_or_path into adapter_config.json's base_model_name_or_path
    model.name_or_path = ""
    model.config._name_or_path = ""
    return model.eval()


def make_batch(row: Row, config, seed: int):
    torch = _torch()
    vocab = config.vocab_size
    pad_id = config.pad_token_id if getattr(config, "pad_token_id", None) is not None else 0
    torch.manual_seed(seed + SEED_BATCH)
    input_ids = torch.randint(FIRST_TOKEN, vocab, (BATCH, SEQ))
    attention_mask = torch.ones_like(input_ids)
    if row.task == "seq2seq-lm":
        labels = torch.randint(FIRST_TOKEN, vocab, (BATCH, TARGET_LEN))
        if row.ignore_labels:
            labels[1, -row.ignore_labels:] = -100
    elif row.task == "seq-cls":
        labels = torch.randint(0, config.num_labels, (BATCH,))
    else:
        labels = None
    if row.padding == "left":
        input_ids[0, :NUM_PADS] = pad_id
        attention_mask[0, :NUM_PADS] = 0
    elif row.padding == "right":
        input_ids[1, -NUM_PADS:] = pad_id
        attention_mask[1, -NUM_PADS:] = 0
    elif row.padding != "none":
        raise ValueError(f"padding {row.padding!r}")
    if row.task == "causal-lm":
        labels = input_ids.masked_fill(attention_mask == 0, -100)  # HF shifts inside the loss
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _logits(model, batch, row: Row, **kwargs):
    """Eval-mode logits; causal-lm positions whose attention_mask is 0 are set to 0 (their values are
    implementation-defined: sdpa and eager differ there). Prompt-learning logits carry the virtual tokens
    in front, so the mask is aligned to the end. `kwargs` go to the forward (adapter_names=...)."""
    torch = _torch()
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    labels=batch["labels"], **kwargs)
    logits = out.logits.detach().clone().float()
    if row.task == "causal-lm":
        L = batch["attention_mask"].shape[1]
        tail = logits[:, -L:, :]
        tail[batch["attention_mask"] == 0] = 0.0
    return logits, out.loss.detach().float().reshape(1)


def _greedy(model, batch):
    torch = _torch()
    with torch.no_grad():
        return model.generate(input_ids=batch["input_ids"][:1], attention_mask=batch["attention_mask"][:1],
                              max_new_tokens=MAX_NEW_TOKENS, do_sample=False).detach().clone()


def _merged_available(method, peft_config):
    return not peft_config.is_prompt_learning and method != "ADAPTION_PROMPT"


def _peft_config(row: Row, batch=None, **overrides):
    import peft

    cfg_cls = peft.mapping.PEFT_TYPE_TO_CONFIG_MAPPING[row.method]
    kwargs = {"task_type": TASK_TYPES[row.task], **(row.peft or {}), **overrides}
    for k, v in kwargs.items():  # values drawn from the row's batch (table.BatchTokens)
        if isinstance(v, BatchTokens):
            kwargs[k] = [int(t) for t in batch["input_ids"][v.row, v.start:v.end]]
    if kwargs.get("prompt_tuning_init") == "TEXT" and "tokenizer_name_or_path" not in kwargs:
        kwargs["tokenizer_name_or_path"] = _text_init_tokenizer()
    return cfg_cls(**kwargs)


# Prompt tuning's TEXT init tokenizes prompt_tuning_init_text with AutoTokenizer: a WordLevel tokenizer over these
# words (ids inside every model's vocabulary, no special tokens), written once per run into a temporary directory.
TEXT_INIT_VOCAB = {"[UNK]": 0, "classify": 17, "the": 42, "review": 99, "as": 5, "positive": 123, "or": 77,
                   "negative": 201}
_TEXT_INIT_TOKENIZER: list = []


def _text_init_tokenizer() -> str:
    if not _TEXT_INIT_TOKENIZER:
        from tokenizers import Tokenizer, models, pre_tokenizers

        tokenizer = Tokenizer(models.WordLevel(TEXT_INIT_VOCAB, unk_token="[UNK]"))
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        d = Path(tempfile.mkdtemp(prefix="peft4j-text-init-"))
        tokenizer.save(str(d / "tokenizer.json"))
        _dump_json({"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "[UNK]"}, d / "tokenizer_config.json")
        _TEXT_INIT_TOKENIZER.append(str(d))
    return _TEXT_INIT_TOKENIZER[0]


def _text_init_token_ids(peft_config) -> list:
    """The ids PEFT's TEXT init took (before repeating/cutting), recorded so runners need no tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(peft_config.tokenizer_name_or_path)
    return [int(i) for i in tokenizer(peft_config.prompt_tuning_init_text)["input_ids"]]


def make_init_data(row: Row, config, seed: int):
    """Row.init_data as tensors (io's init_data/*): random sequences, the first labels of each masked, the last
    example right-padded."""
    torch = _torch()
    d = row.init_data
    if row.task == "seq2seq-lm":
        raise ValueError("init_data is for causal-lm and seq-cls rows")
    pad_id = config.pad_token_id if getattr(config, "pad_token_id", None) is not None else 0
    torch.manual_seed(seed + SEED_INIT_DATA)
    input_ids = torch.randint(FIRST_TOKEN, config.vocab_size, (d.examples, d.length))
    attention_mask = torch.ones_like(input_ids)
    if d.padding:
        input_ids[-1, -d.padding:] = pad_id
        attention_mask[-1, -d.padding:] = 0
    if row.task == "seq-cls":
        labels = torch.randint(0, config.num_labels, (d.examples,))
    else:
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        labels[:, :d.masked_labels] = -100
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: sorted(o) if isinstance(o, (set, frozenset)) else str(o)))


def _initialise(row: Row, model, peft_config, seed: int, case: dict, io: dict):
    """Row.initialise, before get_peft_model: records the config as given and the seed get_peft_model runs under
    (case.json "init"), writes the data (io init_data/*) and runs PEFT's preprocessing that precedes get_peft_model
    (CorDA's covariance, LoRA-GA's gradients). Returns the batches (EVA initialises after get_peft_model)."""
    case["init"] = {"config": _jsonable(peft_config.to_dict()), "seed": seed + SEED_ADAPTER}
    if row.init_data is None:
        return None
    data = make_init_data(row, model.config, seed)
    io.update({f"init_data/{k}": v for k, v in data.items()})
    size = row.init_data.batch_size
    case["init"]["batch_size"] = size
    n = data["input_ids"].shape[0]
    batches = [{k: v[i:i + size] for k, v in data.items()} for i in range(0, n, size)]
    init = peft_config.init_lora_weights
    if init == "corda":
        from peft.tuners.lora.corda import preprocess_corda

        def run_model():  # one sequence per forward, its padding left out (the hook takes one sequence)
            for i in range(n):
                keep = data["attention_mask"][i] == 1
                model(input_ids=data["input_ids"][i][keep][None])

        preprocess_corda(model, peft_config, run_model=run_model)
    elif init == "lora_ga":
        import peft

        def train_step():
            for b in batches:
                model(**b).loss.backward()

        peft.preprocess_loraga(model, peft_config, train_step=train_step)
    return batches


def _make_peft_model(row: Row, model, peft_config, seed: int, case: dict, io: dict):
    """get_peft_model under seed + SEED_ADAPTER, for Row.initialise rows with PEFT's steps before (CorDA, LoRA-GA)
    and after it (EVA) as _initialise describes."""
    torch = _torch()
    import peft

    init_batches = _initialise(row, model, peft_config, seed, case, io) if row.initialise else None
    torch.manual_seed(seed + SEED_ADAPTER)
    peft_model = peft.get_peft_model(model, peft_config)
    if init_batches is not None and peft_config.init_lora_weights == "eva":
        peft.initialize_lora_eva_weights(peft_model, dataloader=init_batches, show_progress_bar=False)
    return peft_model


def _reinitialised(row: Row, untouched, seed: int, gen):
    """A Row.initialise row's adapter made again, as _make_peft_model makes it, from a copy of the untouched base
    model whose every parameter moved by one ulp (the sign per element from `gen`): the init's own sensitivity to
    rounding (an SVD's minor singular vectors, CorDA's C⁻¹), which a nudge of the finished factors does not show."""
    torch = _torch()
    model, peft_config = copy.deepcopy(untouched[0]), copy.deepcopy(untouched[1])
    with torch.no_grad():
        for p in model.parameters():
            up = torch.randint(0, 2, p.shape, generator=gen, dtype=torch.bool)
            p.copy_(torch.nextafter(p, torch.where(up, math.inf, -math.inf).to(p.dtype)))
    return _make_peft_model(row, model, peft_config, seed, {}, {})


def _multi_adapters(row: Row, model, batch, seed: int, case_dir: Path, case: dict, io: dict):
    """Row.multi: makes the named adapters, saves them (before anything else) under adapters/<name>/ and
    fills case and io for its checks (see MULTI_CHECKS)."""
    torch = _torch()
    import peft

    m, checks = row.multi, row.effective_checks()
    names = list(m.adapters)
    if "default" in names:  # PEFT would save it into adapters/ itself
        raise ValueError("a Multi adapter may not be named 'default'")
    torch.manual_seed(seed + SEED_ADAPTER)
    peft_model = peft.get_peft_model(model, _peft_config(row, **m.adapters[names[0]]), adapter_name=names[0])
    for name in names[1:]:
        peft_model.add_adapter(name, _peft_config(row, **m.adapters[name]))
    peft_model.eval()
    root = case_dir / "adapters"
    peft_model.save_pretrained(root)  # adapter <name> into adapters/<name>/
    for card in root.rglob("README.md"):  # PEFT's model card; the format holds only config + weights
        card.unlink()
    case.update({"adapters": {n: f"adapters/{n}" for n in names}, "io": "io.safetensors"})

    if "forward" in checks:
        for n in names:
            peft_model.set_adapter(n)
            io[f"logits_{n}"], _ = _logits(peft_model, batch, row)
    if "mixed" in checks:
        if len(m.mixed) != BATCH or not set(m.mixed) <= set(names) | {BASE_ADAPTER}:
            raise ValueError(f"mixed {m.mixed}: one of {names} or {BASE_ADAPTER!r} per batch row")
        case["mixed_batch_adapter_names"] = list(m.mixed)
        io["mixed_logits"], _ = _logits(peft_model, batch, row, adapter_names=list(m.mixed))
    if "base" in checks:
        with peft_model.disable_adapter():
            io["base_logits"], _ = _logits(peft_model, batch, row)
    if "weighted" in checks:
        key = m.weighted_key()
        peft_model.add_weighted_adapter(adapter_name="weighted", **m.weighted)
        peft_model.set_adapter("weighted")
        io[key], _ = _logits(peft_model, batch, row)
        peft_model.delete_adapter("weighted")
        case["weighted"] = dict(m.weighted, logits_key=key)
    if "delete" in checks:
        gone, active = m.delete
        key = f"logits_{active}"
        peft_model.delete_adapter(gone)
        peft_model.set_adapter(active)
        after, _ = _logits(peft_model, batch, row)
        if key not in io or not torch.equal(after, io[key]):  # PEFT's own promise, checked here
            raise RuntimeError(f"after delete_adapter({gone!r}) {active!r} alone differs from {key}")
        case["delete"] = {"adapter": gone, "then_active": active, "logits_key": key}


def generate_row(row: Row, seed: int, out_dir: Path, model_cache: dict):
    """Writes cases/<row.name>/ and returns its case.json entry."""
    torch = _torch()
    checks = row.effective_checks()
    case_dir = out_dir / "cases" / row.name
    if case_dir.exists():
        shutil.rmtree(case_dir)
    case_dir.mkdir(parents=True)

    # The model: written once per run, rebuilt (same seed => same weights) for every row that uses it.
    model = build_model(row.model, seed, out_dir, write=row.model not in model_cache)
    model_cache[row.model] = True
    batch = make_batch(row, model.config, seed)
    io = {k: v for k, v in batch.items() if v is not None}

    case = {"name": row.name, "arch": row.arch, "task": row.task, "method": row.method,
            "base_model": f"../../models/{row.model}"}
    if row.multi is not None:
        _multi_adapters(row, model, batch, seed, case_dir, case, io)
        case.update({"weights_dtype": MODELS[row.model].weights_dtype, "compute_dtype": "float32",
                     "padding": row.padding, "tolerance": dict(row.tolerance)})
        return _write_case(case_dir, case, io)
    peft_model = None
    if row.method != NONE:
        import peft

        peft_config = _peft_config(row, batch)
        # Row.initialise: the untouched base and config, for the sensitivity reruns (_reinitialised). Not LoRA-GA:
        # A and B come from different singular vectors there, so a rerun can flip one's sign alone, a different
        # adapter (the runner aligns such signs to PEFT's; the row's tolerance covers the rest).
        remake = row.initialise and peft_config.init_lora_weights != "lora_ga"
        untouched = (copy.deepcopy(model), copy.deepcopy(peft_config)) if remake else None
        if row.arrow is not None:
            peft_model, adapter_rel = _arrow_model(row, batch, seed, out_dir, case_dir, case)
            case["adapter"] = adapter_rel
        else:
            peft_model = _make_peft_model(row, model, peft_config, seed, case, io)
            peft_model.eval()
            adapter_dir = case_dir / "adapter"
            peft_model.save_pretrained(adapter_dir)  # before training: the adapter is the initial one
            for extra in ("README.md",):  # PEFT's model card; the format holds only config + weights
                (adapter_dir / extra).unlink(missing_ok=True)
            case["adapter"] = "adapter"
        peft_config = peft_model.active_peft_config
        trainable = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
        merged_available = _merged_available(row.method, peft_config)
        if getattr(peft_config, "prompt_tuning_init", None) == "TEXT":
            case["prompt_tuning_init_token_ids"] = _text_init_token_ids(peft_config)
        case.update({"io": "io.safetensors",
                     "trainable_params": int(sum(p.numel() for p in trainable.values())),
                     "merged_available": bool(merged_available and "merge" in checks)})
        if "train" in checks:
            case["optimizer"] = dict(OPTIMIZER)
        run = peft_model
    else:
        case.update({"io": "io.safetensors", "trainable_params": 0, "merged_available": False})
        run = model
    case.update({"weights_dtype": MODELS[row.model].weights_dtype, "compute_dtype": "float32",
                 "padding": row.padding, "tolerance": dict(row.tolerance)})

    if "forward" in checks:
        io["logits"], io["loss"] = _logits(run, batch, row)
    if "base" in checks:
        if peft_model is None:
            io["base_logits"] = io["logits"].clone()
        else:
            try:
                with peft_model.disable_adapter():
                    io["base_logits"], _ = _logits(peft_model, batch, row)
            except Exception:  # PEFT cannot disable every method
                pass
    if "generate" in checks and row.task == "causal-lm":
        io["greedy_ids"] = _greedy(run, batch)

    if peft_model is not None and ("grad" in checks or "train" in checks or "merge" in checks):
        params = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
        if "grad" in checks:
            for n, p in params.items():
                io[f"init/{n}"] = p.detach().clone()
            peft_model.train()
            peft_model.zero_grad(set_to_none=True)
            out = peft_model(**batch)
            out.loss.backward()
            for n, p in params.items():
                io[f"grad/{n}"] = (p.grad if p.grad is not None else torch.zeros_like(p)).detach().clone()
            peft_model.zero_grad(set_to_none=True)
        # the untrained model, for the sensitivity reruns (deepcopy: no RNG drawn, the reference run untouched);
        # buffers that keep autograd history (MonteCLoRA's sampler holds its last draws so) cannot be deep-copied and
        # are detached first, which changes no value
        if "train" in checks:
            for module in peft_model.modules():
                for key, buf in module._buffers.items():
                    if buf is not None and buf.grad_fn is not None:
                        module._buffers[key] = buf.detach()
        pristine = _deepcopy(peft_model) if "train" in checks else None
        io.update(_train_and_merge(peft_model, batch, row, case))
        if pristine is not None:
            tol = _step3_tolerance(pristine, batch, row, case, io, seed, untouched)
            if tol is not None:
                case["step3_tolerance"] = tol

    return _write_case(case_dir, case, io)


def _deepcopy(peft_model):
    """copy.deepcopy of a PEFT model, with the gradient hooks that deepcopy drops (tensor hooks are not copied)
    attached again: PEFT's OSF projects its gradients through them, and a copy without them trains another method.
    LoRA layers tied by ensure_weight_tying keep the embedding's transposed factors (views, which deepcopy refuses) in
    their construction kwargs, unused once built: the copy is made without them."""
    tied = {m: m.kwargs.pop("tied_adapter") for m in peft_model.modules()
            if isinstance(getattr(m, "kwargs", None), dict) and m.kwargs.get("tied_adapter")}
    try:
        clone = copy.deepcopy(peft_model)
    finally:
        for m, t in tied.items():
            m.kwargs["tied_adapter"] = t
    # deepcopy does not keep storage shared between tensors: tie the copy's factors to its embedding's again.
    if tied:
        names = {m: n for n, m in peft_model.named_modules()}
        embedding = clone.get_input_embeddings()
        for m in tied:
            layer = clone.get_submodule(names[m])
            for adapter in layer.lora_A:
                layer.lora_A[adapter].weight.data = embedding.lora_embedding_B[adapter].data.t()
                layer.lora_B[adapter].weight.data = embedding.lora_embedding_A[adapter].data.t()
                layer.kwargs["tied_adapter"] = {"lora_A": embedding.lora_embedding_B[adapter].t(),
                                                "lora_B": embedding.lora_embedding_A[adapter].t()}
    for module in clone.modules():
        if hasattr(module, "osf_svd_params") and hasattr(module, "_attach_hooks"):
            module.hook_handles = []
            for adapter in module.osf_svd_params:
                module._attach_hooks(adapter)
    return clone


def _osf_float64_svd(peft_model):
    """OSF's frozen factors (U_low_init, S_low_init, V_low_init, U_high, V_high) set from an SVD of the base weight in
    float64: PEFT does not save them, so an independent implementation recomputes them with its own SVD, whose
    rounding moves the 3 steps of the rows that train OSF by more than a 1-ulp nudge of the trained factors does (up to
    6e-5 on the tiny bert); the nudged reruns take this second, equally valid rounding of the same SVD."""
    torch = _torch()
    for module in peft_model.modules():
        if not hasattr(module, "osf_svd_params"):
            continue
        weight = module.get_base_layer().weight.detach()
        u, s, vt = torch.linalg.svd(weight.double(), full_matrices=False)
        for adapter in module.osf_svd_params:
            k = min(module.effective_rank[adapter], s.shape[0])
            parts = {"_osf_U_low_init": u[:, k:], "_osf_S_low_init": s[k:], "_osf_V_low_init": vt[k:, :],
                     "_osf_U_high": u[:, :k], "_osf_V_high": vt[:k, :]}
            for name, value in parts.items():
                frozen = getattr(module, name)
                if adapter in frozen:
                    frozen[adapter] = value.contiguous().to(weight.dtype)


def _psoft_resvd(peft_model):
    """PSOFT's frozen factors (_psoft_A_cache, _psoft_B_cache) rebuilt from a second, equally valid rounding of the
    same SVD: PEFT does not save them, so an independent implementation recomputes them with its own SVD, whose
    rounding moves the 3 steps of the rows that train PSOFT's R by far more than a 1-ulp nudge of R does (1e-4 on the
    tiny llama, seed 777). psoft_svd "full": the float32 SVD of the transposed weight (another LAPACK path);
    "lowrank": torch.svd_lowrank's steps in float64 from the same seeded float32 start. Each singular pair keeps the
    sign of PEFT's: signs are LAPACK's choice, not rounding."""
    torch = _torch()
    from peft.utils.other import transpose

    for module in peft_model.modules():
        if not hasattr(module, "_psoft_A_cache"):
            continue
        for adapter in list(module._psoft_A_cache.keys()):
            a32, b32 = module._psoft_A_cache[adapter], module._psoft_B_cache[adapter]
            w = transpose(module.get_base_layer().weight.detach().double(), module.fan_in_fan_out)
            r = module.r[adapter]
            if module.psoft_svd[adapter] == "full":
                v, s, uh = torch.linalg.svd(w.T.float(), full_matrices=False)
                u, vh = uh.T.double(), v.T.double()
                s = s.double()
            else:  # torch.svd_lowrank's steps, the random start drawn in float32 as PEFT's call draws it
                wide = w.shape[0] < w.shape[1]
                m = w.T if wide else w
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(module.random_seed[adapter])
                    start = torch.randn(m.shape[-1], r, dtype=torch.float32).double()
                q = torch.linalg.qr(m @ start).Q
                for _ in range(module.psoft_svd_lowrank_niter[adapter]):
                    q = torch.linalg.qr(m.T @ q).Q
                    q = torch.linalg.qr(m @ q).Q
                u, s, vh = torch.linalg.svd(q.T @ m, full_matrices=False)
                u = q @ u
                if wide:
                    u, vh = vh.T, u.T
            u, s, vh = u[:, :r], s[:r] / module.scaling[adapter], vh[:r, :]
            if module.ab_svd_init[adapter] == "psoft_init":
                a, b = vh, u * s
            else:
                a, b = s.sqrt()[:, None] * vh, u * s.sqrt()
            sign = torch.sign((b * b32.double()).sum(0))
            module._psoft_A_cache[adapter] = (a * sign[:, None]).to(a32.dtype).contiguous()
            module._psoft_B_cache[adapter] = (b * sign).to(b32.dtype).contiguous()


def _arrow_model(row: Row, batch, seed: int, out_dir: Path, case_dir: Path, case: dict):
    """Row.arrow: the experts (each a LoRA from get_peft_model on a fresh copy of the base model, seeded
    seed + SEED_ADAPTER + k), saved under adapters/task_<i> and adapters/gks_<i>, then PEFT's create_arrow_model
    over them; the router is saved under adapters/arrow_router. Returns the model and the router's folder."""
    torch = _torch()
    import peft
    from peft.tuners.lora.arrow import create_arrow_model

    a, root = row.arrow, case_dir / "adapters"
    experts, paths = {}, {"task": [], "gks": []}
    for kind, overrides in (("task", a.tasks), ("gks", a.general)):
        for i, extra in enumerate(overrides):
            name = f"{kind}_{i}"
            base = build_model(row.model, seed, out_dir, write=False)
            torch.manual_seed(seed + SEED_ADAPTER + len(experts))
            expert = peft.get_peft_model(base, _peft_config(row, batch, **extra))
            expert.save_pretrained(root / name)
            (root / name / "README.md").unlink(missing_ok=True)
            experts[name] = f"adapters/{name}"
            paths[kind].append(str(root / name))
    base = build_model(row.model, seed, out_dir, write=False)
    config = peft.tuners.lora.config.ArrowConfig(**a.config)
    model = create_arrow_model(base, paths["task"], config, general_adapter_paths=paths["gks"] or None)
    model.save_pretrained(root, selected_adapters=["arrow_router"])
    for card in root.rglob("README.md"):
        card.unlink()
    case["expert_adapters"] = experts
    return model.eval(), "adapters/arrow_router"


def _train_and_merge(peft_model, batch, row: Row, case: dict):
    """The row's train and merge checks on `peft_model` (left trained, then merged): their io entries."""
    torch = _torch()
    checks, out_io = row.effective_checks(), {}
    params = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    if "train" in checks:
        opt = torch.optim.AdamW(list(params.values()), lr=OPTIMIZER["lr"], betas=tuple(OPTIMIZER["betas"]),
                                eps=OPTIMIZER["eps"], weight_decay=OPTIMIZER["weight_decay"])
        peft_model.train()
        losses = []
        for _ in range(OPTIMIZER["steps"]):
            opt.zero_grad(set_to_none=True)
            out = peft_model(**batch)
            losses.append(out.loss.detach().float())
            out.loss.backward()
            opt.step()
        peft_model.eval()
        out_io["step_losses"] = torch.stack(losses)
        for n, p in params.items():
            out_io[f"step3/{n}"] = p.detach().clone()
        out_io["step3_logits"], _ = _logits(peft_model, batch, row)
    if "merge" in checks and case["merged_available"]:
        merged = peft_model.merge_and_unload()
        merged.eval()
        out_io["merged_logits"], _ = _logits(merged, batch, row)
    return out_io


def step3_deviation(pristine, batch, row: Row, case: dict, io: dict, seed: int, untouched=None):
    """Reruns train (+ merge) on copies of the untrained `pristine` model whose trainable parameters are each
    moved by one ulp (torch.nextafter towards +-inf, the sign per element from torch.Generator(seed +
    SEED_NUDGE + k), k < NUDGE_DIRECTIONS), Row.initialise rows made again from a nudged base (_reinitialised,
    `untouched`), and compares with the reference in `io`. Returns
    (D, A, log): D = max |nudged - reference| over the STEP3_KEYS tensors and directions; A = the atol that
    covers STEP3_TOLERANCE_FACTOR times every element's deviation at the case rtol,
    max(FACTOR * |nudged - ref| - rtol * |ref|) (0 where rtol alone covers it); log = D per key group and
    direction."""
    torch = _torch()
    rtol = case["tolerance"]["rtol"]
    d_max, a_max, by_group = 0.0, 0.0, {}  # by_group: (group, direction) -> D
    for k in range(NUDGE_DIRECTIONS):
        gen = torch.Generator().manual_seed(seed + SEED_NUDGE + k)
        if untouched is not None:
            nudged = _reinitialised(row, untouched, seed, gen)
        else:
            nudged = _deepcopy(pristine) if k + 1 < NUDGE_DIRECTIONS else pristine
            _osf_float64_svd(nudged)
            _psoft_resvd(nudged)
        with torch.no_grad():
            for p in nudged.parameters():
                if p.requires_grad:
                    up = torch.randint(0, 2, p.shape, generator=gen, dtype=torch.bool)
                    if row.init_nudge is not None:
                        p.add_(torch.where(up, row.init_nudge, -row.init_nudge).to(p.dtype))
                    else:
                        p.copy_(torch.nextafter(p, torch.where(up, math.inf, -math.inf).to(p.dtype)))
        for key, t in _train_and_merge(nudged, batch, row, case).items():
            group = next((g for g in STEP3_KEYS if key.startswith(g)), None)
            if group is None or t.numel() == 0:
                continue
            ref = io[key].double()
            dev = (t.double() - ref).abs()
            d = float(dev.max())
            d_max = max(d_max, d)
            a_max = max(a_max, float((STEP3_TOLERANCE_FACTOR * dev - rtol * ref.abs()).max()))
            by_group[group, k] = max(by_group.get((group, k), 0.0), d)
    log = " ".join(f"{g.rstrip('/')} " + "/".join(f"{by_group[g, k]:.1g}" for k in range(NUDGE_DIRECTIONS))
                   for g in STEP3_KEYS if (g, 0) in by_group)
    return d_max, a_max, log


def _step3_tolerance(pristine, batch, row: Row, case: dict, io: dict, seed: int, untouched=None):
    """step3_tolerance for case.json, or None where the case tolerance already covers the reference's own
    sensitivity (A <= case atol: the row stays as strict as the rest)."""
    d, a, log = step3_deviation(pristine, batch, row, case, io, seed, untouched)
    write = a > case["tolerance"]["atol"]
    SENSITIVITY[row.name] = f"D {d:.2g} A {a:.2g} ({log})" + (f" -> step3 atol {_round_up(a):.2g}" if write else "")
    if not write:
        return None
    return {"rtol": case["tolerance"]["rtol"], "atol": _round_up(a)}


def _round_up(x: float, digits: int = 2) -> float:
    """x rounded up to `digits` significant decimal digits (readable json, never below x)."""
    e = math.floor(math.log10(x)) - digits + 1
    r = round(math.ceil(x / 10.0 ** e - 1e-9) * 10.0 ** e, max(0, -e))
    return r if r >= x else round(r + 10.0 ** e, max(0, -e))


def _write_case(case_dir: Path, case: dict, io: dict):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in io.items()}, str(case_dir / "io.safetensors"))
    _dump_json(case, case_dir / "case.json")
    return case


def generate(out_dir: Path, seed: int, only: Optional[list]):
    torch = _torch()
    import peft
    import transformers

    golden = (Path(__file__).resolve().parent / "golden").resolve()
    target = out_dir.resolve()
    if target == golden or golden in target.parents:
        raise SystemExit(f"refusing to write into {golden}: the golden cases are frozen data")
    rows = ROWS
    if only:
        unknown = [n for n in only if n not in {r.name for r in ROWS}]
        if unknown:
            raise SystemExit(f"unknown rows: {', '.join(unknown)} (see --list)")
        rows = [r for r in ROWS if r.name in only]
    out_dir.mkdir(parents=True, exist_ok=True)
    cases, failed, model_cache = [], {}, {}
    t0 = time.time()
    for row in rows:
        t = time.time()
        # PEFT's warnings (tied embeddings, fan_in_fan_out, ...) shortened to one line each, under their row
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                cases.append(generate_row(row, seed, out_dir, model_cache))
                print(f"  {row.name:<32} {time.time() - t:6.2f} s  {SENSITIVITY.get(row.name, '')}".rstrip(),
                      file=sys.stderr)
            except Exception as e:  # record and go on; the exit status reports it
                failed[row.name] = f"{type(e).__name__}: {e}"
                traceback.print_exc()
                print(f"  {row.name:<32} FAILED {failed[row.name]}", file=sys.stderr)
        for msg in dict.fromkeys(str(w.message).strip().split("\n")[0] for w in caught):
            print(f"      warning: {msg[:200]}", file=sys.stderr)
    manifest = {"variant": "generated", "seed": seed, "torch": torch.__version__,
                "transformers": transformers.__version__, "peft": peft.__version__,
                "cases": cases, "failed": failed}
    _dump_json(manifest, out_dir / "manifest.json")
    print(f"{len(cases)} cases written to {out_dir} in {time.time() - t0:.1f} s, {len(failed)} failed",
          file=sys.stderr)
    return 1 if failed else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", nargs="?", type=Path, help="directory to write (models/, cases/, manifest.json)")
    ap.add_argument("--seed", type=int, default=0, help="base seed (default 0: reproduces the golden models)")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="generate only these rows")
    ap.add_argument("--list", action="store_true", help="print the table of rows and exit")
    ap.add_argument("--verify", type=Path, metavar="DIR", help="check DIR for the case format and exit")
    a = ap.parse_args(argv)
    if a.list:
        list_rows()
        return 0
    if a.verify:
        return 1 if verify(a.verify) else 0
    if a.out_dir is None:
        ap.error("OUT_DIR is required (or --list / --verify DIR)")
    return generate(a.out_dir, a.seed, a.only)


if __name__ == "__main__":
    # PEFT keeps target_modules as a set and writes it in iteration order, which follows Python's
    # per-process string hashing: pin the hash seed so that the same --seed writes the same bytes.
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable] + sys.argv)
    sys.exit(main())
