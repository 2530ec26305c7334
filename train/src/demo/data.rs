//! The demo's data, generated offline from a seed, in the spirit of the paper's synthetic math
//! sets: two skills a small model can learn on a laptop CPU.
//!   add:      "What is 13+4?" -> "17"                    (operands 0..24, answers 0..48)
//!   reverse:  "Reverse the word cab." -> "bac"           (3 letters from a..h)
//! Pretraining text mixes both as plain facts; SFT data teaches one skill or both as
//! prompt-completion pairs behind a short "Q: ...\nA: " prompt; DPO pairs prefer the right sum
//! to a wrong one. Held-out splits are disjoint from the training ones (other operand pairs,
//! other words), so every score in the report is measured on data no model trained on. Each
//! held-out split has HELD_OUT examples, so one example moves an accuracy by half a point.

use serde_json::{json, Value};
use solar_engine::Rng;

/// One instruction example.
#[derive(Clone, Debug)]
pub struct Example {
    pub instruction: String,
    pub output: String,
}

/// Every (a, b) sum and every 3-letter word, split into train and held-out by a seeded shuffle.
pub struct DemoData {
    pub add_train: Vec<Example>,
    pub add_test: Vec<Example>,
    pub rev_train: Vec<Example>,
    pub rev_test: Vec<Example>,
}

const LETTERS: &[u8] = b"abcdefgh";

/// Held-out examples per task (and held-out pairs): one moves an accuracy by 1/200.
pub const HELD_OUT: usize = 200;
/// Operands of the add task run 0..ADD_MAX: 625 sums, 425 of them to train on.
const ADD_MAX: u32 = 25;

fn add_example(a: u32, b: u32) -> Example {
    Example { instruction: format!("What is {a}+{b}?"), output: format!("{}", a + b) }
}

fn rev_example(w: &str) -> Example {
    Example { instruction: format!("Reverse the word {w}."), output: w.chars().rev().collect() }
}

/// Splits `items` (shuffled with `rng`) into (train, test) with `test` items held out.
fn split<T>(mut items: Vec<T>, test: usize, rng: &mut Rng) -> (Vec<T>, Vec<T>) {
    rng.shuffle(&mut items);
    let held = items.split_off(items.len() - test);
    (items, held)
}

impl DemoData {
    pub fn generate(seed: u64) -> DemoData {
        let mut rng = Rng::new(seed);
        let sums: Vec<Example> =
            (0..ADD_MAX).flat_map(|a| (0..ADD_MAX).map(move |b| add_example(a, b))).collect();
        let (add_train, add_test) = split(sums, HELD_OUT, &mut rng);
        let mut words = Vec::new();
        for &x in LETTERS {
            for &y in LETTERS {
                for &z in LETTERS {
                    words.push(String::from_utf8(vec![x, y, z]).expect("ascii"));
                }
            }
        }
        let rev: Vec<Example> = words.iter().map(|w| rev_example(w)).collect();
        let (rev_train, rev_test) = split(rev, HELD_OUT, &mut rng);
        DemoData { add_train, add_test, rev_train, rev_test }
    }

    /// Pretraining documents: facts of both skills, several per line, from the train split (or
    /// the held-out split, for the held-out loss).
    pub fn pretrain_text(&self, held_out: bool, docs: usize, seed: u64) -> Vec<Value> {
        let (add, rev) =
            if held_out { (&self.add_test, &self.rev_test) } else { (&self.add_train, &self.rev_train) };
        let mut rng = Rng::new(seed);
        (0..docs)
            .map(|_| {
                let facts: Vec<String> = (0..6)
                    .map(|_| {
                        if rng.below(2) == 0 {
                            let e = &add[rng.below(add.len() as u64) as usize];
                            format!(
                                "{}={}",
                                e.instruction.trim_start_matches("What is ").trim_end_matches('?'),
                                e.output
                            )
                        } else {
                            let e = &rev[rng.below(rev.len() as u64) as usize];
                            let w =
                                e.instruction.trim_start_matches("Reverse the word ").trim_end_matches('.');
                            format!("reverse {w} is {}", e.output)
                        }
                    })
                    .collect();
                json!({ "text": facts.join(". ") })
            })
            .collect()
    }
}

/// The demo's short instruction prompt (the Alpaca preamble alone would be ~150 byte tokens).
pub fn prompt(instruction: &str) -> String {
    format!("Q: {instruction}\nA: ")
}

/// prompt-completion JSONL records of `examples`.
pub fn sft_records(examples: &[Example]) -> Vec<Value> {
    examples.iter().map(|e| json!({"prompt": prompt(&e.instruction), "completion": e.output})).collect()
}

/// DPO pairs for sums: the right answer is chosen, a wrong one (off by 1..=3) rejected, after
/// the prompt the SFT models were trained with.
pub fn sum_pairs(examples: &[Example], seed: u64) -> Vec<Value> {
    let mut rng = Rng::new(seed);
    examples
        .iter()
        .map(|e| {
            let right: i64 = e.output.parse().unwrap_or(0);
            let off = 1 + rng.below(3) as i64;
            let wrong = if right >= off && rng.below(2) == 0 { right - off } else { right + off };
            json!({"prompt": prompt(&e.instruction), "chosen": e.output, "rejected": wrong.to_string()})
        })
        .collect()
}

/// Multiple-choice records: the right answer among three distractors, in a seeded order.
pub fn choice_records(
    examples: &[Example],
    distractors: impl Fn(&Example, &mut Rng) -> Vec<String>,
    seed: u64,
) -> Vec<Value> {
    let mut rng = Rng::new(seed);
    examples
        .iter()
        .map(|e| {
            let mut choices = distractors(e, &mut rng);
            choices.truncate(3);
            choices.push(e.output.clone());
            rng.shuffle(&mut choices);
            let answer = choices.iter().position(|c| *c == e.output).unwrap_or(0);
            json!({"context": prompt(&e.instruction), "choices": choices, "answer": answer})
        })
        .collect()
}

/// Three wrong sums near the right one.
pub fn sum_distractors(e: &Example, rng: &mut Rng) -> Vec<String> {
    let right: i64 = e.output.parse().unwrap_or(0);
    let mut out = Vec::new();
    while out.len() < 3 {
        let d = right + rng.below(7) as i64 - 3;
        if d != right && d >= 0 && !out.contains(&d.to_string()) {
            out.push(d.to_string());
        }
    }
    out
}

/// Three wrong reversals: the word itself and other orders of its letters.
pub fn word_distractors(e: &Example, rng: &mut Rng) -> Vec<String> {
    let c: Vec<char> = e.output.chars().collect();
    let mut cands: Vec<String> = [[0, 1, 2], [1, 0, 2], [0, 2, 1], [2, 1, 0], [1, 2, 0], [2, 0, 1]]
        .iter()
        .map(|p| p.iter().map(|&i| c[i]).collect::<String>())
        .filter(|s| *s != e.output)
        .collect();
    cands.dedup();
    rng.shuffle(&mut cands);
    let mut out: Vec<String> = Vec::new();
    for s in cands {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    while out.len() < 3 {
        out.push(format!("{}{}", e.output, out.len()));
    }
    out
}
