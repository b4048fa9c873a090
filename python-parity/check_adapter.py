#!/usr/bin/env python3
"""Loads an adapter written by peft4j into HF PEFT and checks it: the other direction of parity.

    check_adapter.py BASE_MODEL_DIR ADAPTER_DIR IO_FILE [--logits-key logits] [--rtol R] [--atol A]
    check_adapter.py --case CASE_DIR [--adapter ADAPTER_DIR] [--logits-key ...]
    check_adapter.py --saved-root SAVED --cases-root CASES [--logits-key step3_logits]

BASE_MODEL_DIR: an HF model directory (config.json + model.safetensors), loaded in float32.
ADAPTER_DIR:    adapter_config.json + adapter_model.safetensors, loaded with peft.PeftModel.from_pretrained.
IO_FILE:        a safetensors file with input_ids, attention_mask (labels for seq2seq) and the expected logits
                under --logits-key (default `logits`; `step3_logits` for an adapter saved after the 3 steps).
--case:         take base model, adapter, io and tolerance from a parity case folder (case.json);
                --adapter replaces the case's adapter folder (e.g. the one peft4j saved for that case).
--saved-root:   every SAVED/<case> folder (what `peft4j parity --save-adapters SAVED` wrote after training;
                cases that do not train are saved as loaded and checked against `logits`) checked against
                CASES/<case> (one Python start for all of them).

Checks, one PASS/FAIL line each; the exit status is 1 if any failed:
  config  adapter_config.json parses as PEFT's config for its peft_type
  keys    the tensors in adapter_model.safetensors are exactly those PEFT saves for that config on this base
          model (none missing, none unexpected, same shapes), and PEFT's own load reports nothing missing
  logits  eval-mode logits of the loaded model match the expected ones within rtol/atol
          (causal-lm positions whose attention_mask is 0 are compared as 0, the cases' convention)
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

DEFAULT_TOL = {"rtol": 1e-4, "atol": 1e-5}


def _task_of(config) -> str:
    arch = (config.architectures or [""])[0]
    if arch.endswith("ForSequenceClassification"):
        return "seq-cls"
    if config.is_encoder_decoder:
        return "seq2seq-lm"
    return "causal-lm"


def _arrow_model(base, adapter_dir: Path, experts: dict, case_dir: Path):
    """PEFT cannot load an Arrow router by itself (ArrowConfig's task_adapter_names is not an init field, so a saved
    config loses it): as PEFT's own workflow does, create_arrow_model loads the case's experts and adds the router,
    whose weights then come from the saved file."""
    from safetensors.torch import load_file

    import peft
    from peft.tuners.lora.arrow import create_arrow_model
    from peft.utils import set_peft_model_state_dict

    saved = json.loads((adapter_dir / "adapter_config.json").read_text())["arrow_config"]
    init = {f.name for f in __import__("dataclasses").fields(peft.tuners.lora.config.ArrowConfig) if f.init}
    config = peft.tuners.lora.config.ArrowConfig(**{k: v for k, v in saved.items() if k in init})
    paths = {kind: [str(case_dir / experts[n]) for n in saved.get(f"{kind}_adapter_names") or []] for kind in ("task", "gks")}
    model = create_arrow_model(base, paths["task"], config, general_adapter_paths=paths["gks"] or None)
    result = set_peft_model_state_dict(model, load_file(str(adapter_dir / "adapter_model.safetensors")),
                                       adapter_name="arrow_router")
    missing = [k for k in result.missing_keys if "arrow_router" in k]
    return model, missing


def check(base_dir: Path, adapter_dir: Path, io_file: Path, logits_key: str, rtol: float, atol: float,
          experts: dict | None = None, case_dir: Path | None = None) -> bool:
    import torch
    import transformers
    from safetensors import safe_open
    from safetensors.torch import load_file

    import peft
    from peft import PeftConfig, PeftModel
    from peft.utils import get_peft_model_state_dict

    torch.set_num_threads(1)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    ok = True

    def report(passed: bool, what: str, msg: str):
        nonlocal ok
        ok &= passed
        print(f"{'PASS' if passed else 'FAIL'} {what}: {msg}")

    # config
    try:
        peft_config = PeftConfig.from_pretrained(str(adapter_dir))
        report(True, "config", f"{getattr(peft_config.peft_type, 'value', peft_config.peft_type)} adapter_config.json parsed by PEFT {peft.__version__}")
    except Exception as e:
        report(False, "config", f"{adapter_dir}/adapter_config.json: {type(e).__name__}: {e}")
        return False

    # model + adapter
    config = transformers.AutoConfig.from_pretrained(str(base_dir))
    task = _task_of(config)
    model_cls = getattr(transformers, config.architectures[0])
    base = model_cls.from_pretrained(str(base_dir), dtype=torch.float32).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if getattr(peft_config, "arrow_config", None) is not None:
                model, missing_keys = _arrow_model(base, adapter_dir, experts or {}, case_dir)
                model.eval()
                if missing_keys:
                    warnings.warn(f"missing adapter keys: {missing_keys}")
            else:
                model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
        except Exception as e:  # size mismatches end here
            report(False, "keys", f"PeftModel.from_pretrained failed: {type(e).__name__}: {e}")
            return False
    load_warnings = [str(w.message) for w in caught if "missing adapter keys" in str(w.message)]

    # keys: the file against what PEFT itself would save for this config and base model
    with safe_open(str(adapter_dir / "adapter_model.safetensors"), framework="pt") as f:
        file_shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    expected = {k: tuple(v.shape) for k, v in get_peft_model_state_dict(model, adapter_name=model.active_adapter).items()}
    missing = sorted(set(expected) - set(file_shapes))
    unexpected = sorted(set(file_shapes) - set(expected))
    shape_diff = sorted(k for k in set(expected) & set(file_shapes) if expected[k] != file_shapes[k])
    if missing:
        report(False, "keys", f"{len(missing)} missing: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        report(False, "keys", f"{len(unexpected)} unexpected: {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    if shape_diff:
        report(False, "keys", "shape differs: " + ", ".join(f"{k} {file_shapes[k]} != {expected[k]}" for k in shape_diff[:5]))
    if load_warnings:
        report(False, "keys", "PEFT: " + " | ".join(load_warnings))
    if not (missing or unexpected or shape_diff or load_warnings):
        report(True, "keys", f"{len(file_shapes)} tensors, exactly the keys and shapes PEFT saves")

    # logits
    io = load_file(str(io_file))
    if logits_key not in io:
        report(False, "logits", f"{io_file} has no {logits_key!r}")
        return False
    ids, mask = io["input_ids"], io["attention_mask"]
    kwargs = {"input_ids": ids, "attention_mask": mask}
    if task == "seq2seq-lm":
        if "labels" not in io:
            report(False, "logits", f"{io_file} has no labels (seq2seq decoder inputs)")
            return False
        # decoder inputs as the labels would make them, without labels: no loss, so no training-only terms
        # (AdaLoRA's orthogonality regulariser needs a trainable adapter, which a loaded one is not)
        kwargs["decoder_input_ids"] = base._shift_right(io["labels"])
    with torch.no_grad():
        logits = model(**kwargs).logits.float()
    if task == "causal-lm":
        tail = logits[:, -mask.shape[1]:, :]
        tail[mask == 0] = 0.0
    want = io[logits_key]
    if logits.shape != want.shape:
        report(False, "logits", f"shape {tuple(logits.shape)} != expected {tuple(want.shape)}")
        return False
    diff = (logits - want).abs()
    close = torch.isclose(logits, want, rtol=rtol, atol=atol)
    n_bad = int((~close).sum())
    msg = f"{logits_key} {tuple(want.shape)} max abs diff {diff.max().item():.3g} (rtol {rtol:g}, atol {atol:g})"
    if n_bad:
        msg += f", {n_bad} elements outside"
    report(n_bad == 0, "logits", msg)
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("base_model", nargs="?", type=Path)
    ap.add_argument("adapter", nargs="?", type=Path)
    ap.add_argument("io", nargs="?", type=Path)
    ap.add_argument("--case", type=Path, help="a parity case folder (case.json)")
    ap.add_argument("--adapter", dest="adapter_override", type=Path, help="with --case: the adapter to check")
    ap.add_argument("--saved-root", type=Path, help="folders of adapters peft4j saved, one per case")
    ap.add_argument("--cases-root", type=Path, help="with --saved-root: the cases/ folder they came from")
    ap.add_argument("--logits-key", default="logits", help="io key of the expected logits (default: logits)")
    ap.add_argument("--rtol", type=float)
    ap.add_argument("--atol", type=float)
    a = ap.parse_args(argv)
    tol = dict(DEFAULT_TOL)
    jobs = []  # (base, adapter, io, logits key, tolerance, expert adapters, case folder)
    if a.saved_root:
        if not a.cases_root:
            ap.error("--saved-root needs --cases-root")
        for saved in sorted(p for p in a.saved_root.iterdir() if p.is_dir()):
            case_dir = a.cases_root / saved.name
            case = json.loads((case_dir / "case.json").read_text())
            case_tol = dict(DEFAULT_TOL, **case.get("tolerance", {}))
            if a.logits_key == "step3_logits" and "step3_tolerance" in case:
                # trained logits are only as exact as the reference's own sensitivity (generate.py measures it)
                case_tol = {k: max(case_tol[k], case["step3_tolerance"][k]) for k in ("rtol", "atol")}
            # a case that does not train (no optimizer) was saved as loaded: its logits are the untrained ones
            key = a.logits_key if a.logits_key != "step3_logits" or "optimizer" in case else "logits"
            jobs.append(((case_dir / case["base_model"]).resolve(), saved, case_dir / case.get("io", "io.safetensors"),
                         key, case_tol, case.get("expert_adapters"), case_dir))
        if not jobs:
            print(f"FAIL saved: {a.saved_root} holds no adapter folders")
            return 1
    elif a.case:
        case = json.loads((a.case / "case.json").read_text())
        base_dir = (a.case / case["base_model"]).resolve()
        io_file = a.case / case.get("io", "io.safetensors")
        tol.update(case.get("tolerance", {}))
        if a.adapter_override is not None:
            jobs.append((base_dir, a.adapter_override, io_file, a.logits_key, None, case.get("expert_adapters"), a.case))
        elif "adapter" in case:
            jobs.append((base_dir, a.case / case["adapter"], io_file, a.logits_key, None, case.get("expert_adapters"),
                         a.case))
        elif "adapters" in case:  # several named adapters: each against logits_<name>
            jobs += [(base_dir, a.case / d, io_file, f"logits_{n}", None, None, a.case) for n, d in case["adapters"].items()]
        else:
            print(f"FAIL case: {a.case} has no adapter (method {case.get('method')})")
            return 1
    else:
        if not (a.base_model and a.adapter and a.io):
            ap.error("BASE_MODEL_DIR ADAPTER_DIR IO_FILE, or --case CASE_DIR")
        jobs.append((a.base_model, a.adapter, a.io, a.logits_key, None, None, None))
    if a.rtol is not None:
        tol["rtol"] = a.rtol
    if a.atol is not None:
        tol["atol"] = a.atol
    ok = True
    for base_dir, adapter_dir, io_file, key, job_tol, experts, case_dir in jobs:
        t = job_tol or tol
        print(f"check {adapter_dir} on {base_dir} against {io_file}")
        ok &= check(base_dir, adapter_dir, io_file, key, t["rtol"], t["atol"], experts, case_dir)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
