#!/usr/bin/env python3
"""Checks case directories (golden/ and generated ones alike) for the case format.

The format: golden/README.md and python-parity/README.md "Case format".

    verify.py DIR [DIR...]      print each problem as a FAIL line, then one summary line per DIR

Exit status 1 when a directory has a problem. `generate.py --verify DIR` runs the same check. Needs only
the standard library; with safetensors installed it also reads the io tensors (finite floats, 0/1 masks,
base_logits == logits for NONE).
"""
from __future__ import annotations

import argparse
import json
import math
import struct
import sys
from pathlib import Path

from case_format import BASE_ADAPTER, MAX_NEW_TOKENS, NONE, TASKS

CASE_FIELDS = ("name", "arch", "task", "method", "base_model", "io", "tolerance")
OPTIMIZER_FIELDS = ("name", "lr", "betas", "eps", "weight_decay", "steps")
FLOAT_DTYPES = {"F32", "F16", "BF16", "F64"}
ST_DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}


def _st_header(path: Path) -> dict:
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return h


def verify(root: Path) -> int:
    """Checks a cases directory for the format; prints problems and returns the number found."""
    errors = []

    def err(msg):
        errors.append(msg)

    mpath = root / "manifest.json"
    if not mpath.is_file():
        print(f"FAIL {root}: no manifest.json")
        return 1
    manifest = json.loads(mpath.read_text())
    for k in ("variant", "seed", "torch", "transformers", "peft", "cases", "failed"):
        if k not in manifest:
            err(f"manifest.json: no {k!r}")
    names = [c.get("name") for c in manifest.get("cases", [])]
    if len(set(names)) != len(names):
        err("manifest.json: duplicate case names")
    try:
        from safetensors import safe_open
    except ImportError:
        safe_open = None

    for entry in manifest.get("cases", []):
        name = entry.get("name", "?")
        cdir = root / "cases" / name
        p = f"cases/{name}"

        def cerr(msg):
            err(f"{p}: {msg}")

        cj = cdir / "case.json"
        if not cj.is_file():
            cerr("no case.json")
            continue
        case = json.loads(cj.read_text())
        if case != entry:
            cerr("case.json differs from its manifest entry")
        for k in CASE_FIELDS:
            if k not in case:
                cerr(f"case.json: no {k!r}")
        task, method = case.get("task"), case.get("method")
        if task not in TASKS:
            cerr(f"task {task!r}")
        tol = case.get("tolerance", {})
        if not (isinstance(tol.get("rtol"), float) and isinstance(tol.get("atol"), float)):
            cerr(f"tolerance {tol!r}")
        if "step3_tolerance" in case:  # optional: for step_losses, step3/*, step3_logits, merged_logits only
            t3 = case["step3_tolerance"]
            num = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 0
            if not (isinstance(t3, dict) and set(t3) == {"rtol", "atol"} and num(t3["rtol"]) and num(t3["atol"])):
                cerr(f"step3_tolerance {t3!r}: must be {{rtol: number, atol: number}}")
            elif "optimizer" not in case:
                cerr("step3_tolerance in a case that does not train")
            elif num(tol.get("rtol")) and num(tol.get("atol")) and (t3["rtol"] < tol["rtol"] or t3["atol"] < tol["atol"]):
                cerr(f"step3_tolerance {t3!r} below tolerance {tol!r}")
        if "init" in case:  # optional: the runner initialises the adapter itself (README "Initialisations")
            ini = case["init"]
            if not (isinstance(ini, dict) and isinstance(ini.get("config"), dict) and isinstance(ini.get("seed"), int)
                    and set(ini) <= {"config", "seed", "batch_size"}):
                cerr(f"init {ini!r}: must be {{config: dict, seed: int[, batch_size: int]}}")
            elif ini["config"].get("peft_type") != method:
                cerr(f"init config peft_type {ini['config'].get('peft_type')!r} != method {method!r}")
        if case.get("padding", "none") not in ("none", "left", "right"):
            cerr(f"padding {case.get('padding')!r}")
        if case.get("compute_dtype", "float32") != "float32":
            cerr(f"compute_dtype {case.get('compute_dtype')!r}")

        # base model
        mdir = (cdir / case.get("base_model", "")).resolve()
        if not (mdir / "config.json").is_file():
            cerr(f"base model {case.get('base_model')}: no config.json")
        weights = sorted(mdir.glob("model*.safetensors"))
        if not weights:
            cerr(f"base model {case.get('base_model')}: no model.safetensors")
        else:
            wd = case.get("weights_dtype", "float32")
            if wd not in ST_DTYPES:
                cerr(f"weights_dtype {wd!r}")
            else:
                dts = {v["dtype"] for w in weights for v in _st_header(w).values()} & FLOAT_DTYPES
                if dts != {ST_DTYPES[wd]}:
                    cerr(f"weights_dtype {wd} but model.safetensors holds {sorted(dts)}")
            mcfg = json.loads((mdir / "config.json").read_text())
            if (mcfg.get("model_type") != case.get("arch")):
                cerr(f"model_type {mcfg.get('model_type')!r} != arch {case.get('arch')!r}")

        # adapters
        adapters = {}
        if method == NONE:
            if "adapter" in case or "adapters" in case:
                cerr("method NONE with an adapter")
            if (cdir / "adapter").exists():
                cerr("method NONE with an adapter folder")
        elif "adapters" in case:
            adapters = dict(case["adapters"])
        elif "adapter" in case:
            adapters = {"default": case["adapter"]}
        else:
            cerr("no 'adapter' nor 'adapters'")
        # adapters loaded before the case's own (Arrow's experts), each checked like it
        experts = dict(case.get("expert_adapters", {}))
        if experts and "adapter" not in case:
            cerr("expert_adapters without an 'adapter' to route among them")
        for an, ad in {**experts, **adapters}.items():
            adir = cdir / ad
            acfg_path, aw = adir / "adapter_config.json", adir / "adapter_model.safetensors"
            if not acfg_path.is_file() or not aw.is_file():
                cerr(f"adapter {ad}: adapter_config.json / adapter_model.safetensors missing")
                continue
            extra = sorted(x.name for x in adir.iterdir())
            if extra != ["adapter_config.json", "adapter_model.safetensors"]:
                cerr(f"adapter {ad}: unexpected files {extra}")
            acfg = json.loads(acfg_path.read_text())
            if acfg.get("peft_type") != method:
                cerr(f"adapter {ad}: peft_type {acfg.get('peft_type')!r} != method {method!r}")
            keys = list(_st_header(aw))
            if not keys:
                cerr(f"adapter {ad}: empty adapter_model.safetensors")
            if any(f".{an}." in k for k in keys):  # PEFT saves keys without the adapter name
                cerr(f"adapter {ad}: keys carry the adapter name {an!r}")

        # io
        iop = cdir / case.get("io", "io.safetensors")
        if not iop.is_file():
            cerr("no io.safetensors")
            continue
        h = _st_header(iop)
        shape = lambda k: h[k]["shape"]

        def need(k, dtype=None):
            if k not in h:
                cerr(f"io: no {k!r}")
                return False
            if dtype and h[k]["dtype"] != dtype:
                cerr(f"io: {k} is {h[k]['dtype']}, expected {dtype}")
            return True

        for k in ("input_ids", "attention_mask", "labels"):
            need(k, "I64")
        if not all(k in h for k in ("input_ids", "attention_mask", "labels")):
            continue
        B, L = shape("input_ids")
        if shape("attention_mask") != [B, L]:
            cerr("io: attention_mask shape != input_ids shape")
        lab = shape("labels")
        if task == "causal-lm" and lab != [B, L]:
            cerr(f"io: causal-lm labels shape {lab}")
        if task == "seq-cls" and lab != [B]:
            cerr(f"io: seq-cls labels shape {lab}")
        if task == "seq2seq-lm" and (len(lab) != 2 or lab[0] != B):
            cerr(f"io: seq2seq labels shape {lab}")

        def logits_ok(k):
            if not need(k, "F32"):
                return
            s = shape(k)
            if task == "causal-lm" and not (len(s) == 3 and s[0] == B and s[1] >= L):
                cerr(f"io: {k} shape {s}")
            if task == "seq-cls" and not (len(s) == 2 and s[0] == B):
                cerr(f"io: {k} shape {s}")
            if task == "seq2seq-lm" and not (len(s) == 3 and s[:2] == lab[:2]):
                cerr(f"io: {k} shape {s}")

        if "adapters" in case:  # several named adapters
            for an in adapters:
                logits_ok(f"logits_{an}")
            mixed = case.get("mixed_batch_adapter_names")
            if mixed:
                logits_ok("mixed_logits")
                if len(mixed) != B or not set(mixed) <= set(adapters) | {BASE_ADAPTER}:
                    cerr(f"mixed_batch_adapter_names {mixed}: one of the adapters or {BASE_ADAPTER!r} per row")
            w = case.get("weighted")
            if w:
                wa, ww = w.get("adapters", []), w.get("weights", [])
                if not set(wa) <= set(adapters) or len(wa) != len(ww):
                    cerr(f"weighted {w}: adapters and weights do not fit")
                logits_ok(w.get("logits_key") or f"{w['combination_type']}_{'_'.join(str(x) for x in ww)}_logits")
            if "base_logits" in h:
                logits_ok("base_logits")
            d = case.get("delete")
            if d:
                if d.get("adapter") not in adapters or d.get("then_active") not in adapters:
                    cerr(f"delete {d}: not among the adapters")
                logits_ok(d.get("logits_key", "?"))
        else:
            logits_ok("logits")
            if need("loss", "F32") and shape("loss") != [1]:
                cerr(f"io: loss shape {shape('loss')}")
            if method == NONE:
                logits_ok("base_logits")
            elif "base_logits" in h:
                logits_ok("base_logits")
            if task == "causal-lm":
                if need("greedy_ids", "I64"):
                    g = shape("greedy_ids")
                    if not (len(g) == 2 and g[0] == 1 and L < g[1] <= L + MAX_NEW_TOKENS):
                        cerr(f"io: greedy_ids shape {g}")
            elif "greedy_ids" in h:
                cerr("io: greedy_ids in a non-causal-lm case")
            if method == NONE:
                for k in ("trainable_params", "merged_available", "optimizer"):
                    if case.get(k) not in (None, 0, False):
                        cerr(f"method NONE with {k}={case.get(k)!r}")
                stray = [k for k in h if "/" in k or k.startswith("step") or k == "merged_logits"]
                if stray:
                    cerr(f"io: method NONE with training keys {stray[:3]}")
            else:
                if not isinstance(case.get("trainable_params"), int):
                    cerr("case.json: trainable_params not an int")
                if not isinstance(case.get("merged_available"), bool):
                    cerr("case.json: merged_available not a bool")
                inits = {k[5:] for k in h if k.startswith("init/")}
                grads = {k[5:] for k in h if k.startswith("grad/")}
                step3 = {k[6:] for k in h if k.startswith("step3/")}
                if "optimizer" in case:
                    o = case["optimizer"]
                    for k in OPTIMIZER_FIELDS:
                        if k not in o:
                            cerr(f"optimizer: no {k!r}")
                    if not inits:
                        cerr("io: no init/<param>")
                    if inits != grads or inits != step3:
                        cerr("io: init/, grad/, step3/ name different parameters")
                    for k in inits & grads & step3:
                        if not (shape("init/" + k) == shape("grad/" + k) == shape("step3/" + k)):
                            cerr(f"io: shapes of init/grad/step3 {k} differ")
                    if need("step_losses", "F32") and shape("step_losses") != [o.get("steps", 3)]:
                        cerr(f"io: step_losses shape {shape('step_losses')}")
                    logits_ok("step3_logits")
                    n = sum(_numel(shape("init/" + k)) for k in inits)
                    if n != case.get("trainable_params"):
                        cerr(f"trainable_params {case.get('trainable_params')} != numel of init/ {n}")
                if case.get("merged_available"):
                    logits_ok("merged_logits")
                elif "merged_logits" in h:
                    cerr("io: merged_logits although merged_available is false")

        # values: finite floats, the NONE identity base_logits == logits
        if safe_open is not None:
            with safe_open(str(iop), framework="pt") as f:
                for k in f.keys():
                    t = f.get_tensor(k)
                    if t.is_floating_point() and not bool(t.isfinite().all()):
                        cerr(f"io: {k} has non-finite values")
                if method == NONE and "logits" in h and "base_logits" in h:
                    if not bool((f.get_tensor("logits") == f.get_tensor("base_logits")).all()):
                        cerr("io: NONE case with base_logits != logits")
                am = f.get_tensor("attention_mask")
                if not bool(((am == 0) | (am == 1)).all()):
                    cerr("io: attention_mask not 0/1")

    for n in manifest.get("failed", {}):
        err(f"manifest.json: failed row {n}: {manifest['failed'][n]}")
    listed = {c.get("name") for c in manifest.get("cases", [])}
    on_disk = {d.name for d in (root / "cases").iterdir()} if (root / "cases").is_dir() else set()
    if on_disk - listed:
        err(f"case folders not in manifest.json: {sorted(on_disk - listed)}")
    for e in errors:
        print(f"FAIL {e}")
    print(f"{'OK' if not errors else 'FAILED'}: {root}: {len(manifest.get('cases', []))} cases, "
          f"{len(errors)} problems")
    return len(errors)


def _numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="a case directory (manifest.json, models/, cases/)")
    a = ap.parse_args(argv)
    problems = [verify(d) for d in a.dirs]  # every directory, not only up to the first that fails
    return 1 if any(problems) else 0


if __name__ == "__main__":
    sys.exit(main())
