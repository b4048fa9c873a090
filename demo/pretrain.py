"""Builds peft4j's demo base model: a tokenizer, a small Llama pretrained on generated text, and the task data.

Everything is generated from the templates below with a fixed seed (no download, no external corpus): a world of
invented people, each living in a city and working in a job, described by sentences in many phrasings. The
pretrained model knows these facts but has never seen a question. The demo task asks them as questions
("Question: Where does Bolami live?\nAnswer:" -> " Paris"); LoRA fine-tuning on the questions about some people
teaches the format, and the held-out people, whose facts only pretraining taught, measure whether it generalised.

Writes (under --out, by default demo/ beside this script):
  model/      config.json, generation_config.json, model.safetensors (f32), tokenizer.json
  data/       train.jsonl and eval.jsonl (prompt + completion)
  reference/  tokenizer_ids.json (texts and their ids) and logits.safetensors (input_ids, logits) that the Java
              tests compare peft4j against
Run with the pinned reference environment: $(bash python-parity/setup_env.sh | tail -1) demo/pretrain.py
"""
import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM

SEED = 1234
PEOPLE = 360
CITIES = ["Paris", "Lima", "Oslo", "Cairo", "Delhi", "Tokyo", "Quito", "Rome", "Dakar", "Hanoi",
          "Perth", "Dublin", "Bern", "Riga", "Seoul", "Accra", "Havana", "Sofia", "Kyiv", "Nairobi"]
JOBS = ["baker", "pilot", "farmer", "doctor", "teacher", "painter", "sailor", "singer", "judge", "miner",
        "nurse", "tailor", "writer", "dancer", "chemist", "plumber", "gardener", "butcher", "cook", "driver"]
CITY_SENTENCES = ["{p} lives in {c}.", "{p} has a home in {c}.", "The home of {p} is in {c}.",
                  "{p} moved to {c} years ago.", "Every morning {p} walks through {c}.",
                  "In {c} you can meet {p}.", "{p} is a resident of {c}."]
JOB_SENTENCES = ["{p} works as a {j}.", "{p} is a {j}.", "By trade {p} is a {j}.", "The job of {p} is {j}.",
                 "{p} earns a living as a {j}.", "People know {p} as a {j}."]
QUESTIONS = [("Where does {p} live?", "c"), ("What is the job of {p}?", "j")]
TRAIN_PEOPLE = 240  # questions about these people train; the rest are held out for evaluation
EVAL_EXAMPLES = 60


def make_people(rng):
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    names = set()
    while len(names) < PEOPLE:
        syllables = rng.randint(2, 3)
        name = "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(syllables))
        names.add(name.capitalize())
    return [(name, rng.choice(CITIES), rng.choice(JOBS)) for name in sorted(names)]


def biography(rng, person):
    name, city, job = person
    sentences = [rng.choice(CITY_SENTENCES).format(p=name, c=city), rng.choice(JOB_SENTENCES).format(p=name, j=job)]
    rng.shuffle(sentences)
    return " ".join(sentences)


def train_tokenizer(people, vocab_size):
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    corpus = [t.format(p=p, c=c, j=j) for p, c, j in people for t in CITY_SENTENCES + JOB_SENTENCES]
    corpus += [q.format(p=p) + "\nAnswer:" for p, _, _ in people for q, _ in QUESTIONS]
    tokenizer.train_from_iterator(corpus, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tokenizer


def task_examples(people):
    examples = []
    for name, city, job in people:
        for question, field in QUESTIONS:
            answer = city if field == "c" else job
            examples.append({"prompt": "Question: " + question.format(p=name) + "\nAnswer:",
                             "completion": " " + answer})
    return examples


def packed_batches(rng, people, tokenizer, batch, length):
    """Endless batches of biographies, each started with <s> and ended with </s>, packed into rows."""
    stream = []
    while True:
        while len(stream) < batch * length:
            person = people[rng.randrange(len(people))]
            stream += tokenizer.encode(biography(rng, person)).ids + [2]
        rows = torch.tensor(stream[:batch * length]).view(batch, length)
        stream = stream[batch * length:]
        yield rows


def exact_match(model, tokenizer, examples):
    correct = 0
    model.eval()
    with torch.no_grad():
        for ex in examples:
            ids = torch.tensor([tokenizer.encode(ex["prompt"]).ids])
            out = model.generate(ids, max_new_tokens=6, do_sample=False, eos_token_id=2, pad_token_id=0)
            text = tokenizer.decode(out[0, ids.shape[1]:].tolist(), skip_special_tokens=True)
            correct += text.strip() == ex["completion"].strip()
    model.train()
    return correct / len(examples)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args()
    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    rng = random.Random(SEED)

    people = make_people(rng)
    tokenizer = train_tokenizer(people, vocab_size=768)
    vocab = tokenizer.get_vocab_size()
    config = LlamaConfig(vocab_size=vocab, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                         rms_norm_eps=1e-6, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0)
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = args.steps // 20
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min((s + 1) / warmup, 0.5 * (
        1 + math.cos(math.pi * min(1.0, (s - warmup) / max(1, args.steps - warmup))))))
    batches = packed_batches(rng, people, tokenizer, args.batch, args.length)
    start = time.time()
    for step in range(1, args.steps + 1):
        rows = next(batches)
        loss = model(input_ids=rows, labels=rows).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if step % 200 == 0 or step == args.steps:
            print(f"step {step} loss {loss.item():.4f} ({time.time() - start:.0f} s)", flush=True)

    examples = task_examples(people)
    split = TRAIN_PEOPLE * len(QUESTIONS)
    train, held_out = examples[:split], examples[split:]
    random.Random(SEED).shuffle(train)
    random.Random(SEED + 1).shuffle(held_out)
    held_out = held_out[:EVAL_EXAMPLES]
    print(f"base model exact match on the held-out questions: {exact_match(model, tokenizer, held_out):.3f}")

    model_dir, data_dir, ref_dir = args.out / "model", args.out / "data", args.out / "reference"
    for d in (model_dir, data_dir, ref_dir):
        d.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save(str(model_dir / "tokenizer.json"))
    for name, rows in (("train", train), ("eval", held_out)):
        with open(data_dir / f"{name}.jsonl", "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")

    texts = [held_out[0]["prompt"] + held_out[0]["completion"], biography(rng, people[0]),
             "Zebras café: naïve 42 émigrés\n\ttabs"]
    encoded = [{"text": t, "ids": tokenizer.encode(t).ids,
                "ids_without_special": tokenizer.encode(t, add_special_tokens=False).ids} for t in texts]
    (ref_dir / "tokenizer_ids.json").write_text(json.dumps(encoded, indent=1, ensure_ascii=False) + "\n")
    model.eval()
    ids = torch.tensor([encoded[0]["ids"], encoded[1]["ids"][:len(encoded[0]["ids"])]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    save_file({"input_ids": ids, "logits": logits.contiguous()}, str(ref_dir / "logits.safetensors"))


if __name__ == "__main__":
    main()
