//! The paper's own answer reading and rewards, as its released code does them
//! (GitHub `armenjeddi/medbridgerl`): `inference.py`'s `extract_answer_tag`, `parse_mcq_letter`,
//! `parse_freeform` and `normalize_text` for evaluation, and GRPO-CARE's `clean_text`,
//! accuracy reward and format reward (`src/open_r1/grpo.py`) for training.
//!
//! They differ from medbridge's own extractor (`extract.rs`) on purpose, and a reproduction must
//! use them: evaluation takes the *first* `<answer>` tag and falls back to "answer: X" and then
//! to the first standalone capital letter anywhere, while the training reward compares the
//! *last* tag's text after `clean_text`.
//!
//! Python's `re` and `str` semantics are kept where they matter: `\s` and `strip()` are
//! `str.isspace()` (which, unlike Rust's `char::is_whitespace`, includes U+001C–U+001F), `\w` is
//! `str.isalnum()` or `_` (letters and numbers), `splitlines()` splits on its eleven line
//! boundaries, and `IGNORECASE` lets `i` match `ı`/`İ` and `s` match `ſ`. Rust's `regex` has no
//! look-around, so the word boundaries and `clean_text`'s newline rules are written out by hand.
//! `tests/fixtures/medbridgerl/corpus.json` holds the released functions' outputs on tricky
//! completions; the tests below must reproduce every one exactly.

use std::sync::LazyLock;

use regex::Regex;

/// Python's `str.isspace()`, which `\s` and `strip()` use.
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.isalnum()`: letters and numbers of any script.
fn py_alnum(c: char) -> bool {
    static ALNUM: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[\p{L}\p{N}]$").expect("valid regex"));
    c.is_ascii_alphanumeric() || (!c.is_ascii() && ALNUM.is_match(c.encode_utf8(&mut [0; 4])))
}

/// Python's `\w` on `str` patterns.
fn py_word(c: char) -> bool {
    c == '_' || py_alnum(c)
}

pub(crate) fn py_strip(s: &str) -> &str {
    s.trim_matches(py_space)
}

/// Python's `str.splitlines()`.
fn py_splitlines(s: &str) -> Vec<&str> {
    const BREAKS: [char; 10] =
        ['\n', '\r', '\u{b}', '\u{c}', '\u{1c}', '\u{1d}', '\u{1e}', '\u{85}', '\u{2028}', '\u{2029}'];
    let mut lines = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find(BREAKS) {
        lines.push(&rest[..i]);
        let skip = if rest[i..].starts_with("\r\n") {
            2
        } else {
            rest[i..].chars().next().map_or(1, char::len_utf8)
        };
        rest = &rest[i + skip..];
    }
    if !rest.is_empty() {
        lines.push(rest);
    }
    lines
}

/// The first capital `A`–`Z` that stands alone between word boundaries (`\b([A-Z])\b`).
fn standalone_capital(s: &str) -> Option<char> {
    let chars: Vec<char> = s.chars().collect();
    (0..chars.len()).find_map(|i| {
        let c = chars[i];
        let before = i == 0 || !py_word(chars[i - 1]);
        let after = chars.get(i + 1).is_none_or(|&n| !py_word(n));
        (c.is_ascii_uppercase() && before && after).then_some(c)
    })
}

/// `normalize_text`: trimmed, lower-case, without leading or trailing non-alphanumerics,
/// whitespace runs collapsed to one space.
pub fn normalize_text(s: &str) -> String {
    let lower = py_strip(s).to_lowercase();
    let inner = lower.trim_matches(|c: char| !py_alnum(c));
    let mut out = String::with_capacity(inner.len());
    let mut in_space = false;
    for c in inner.chars() {
        if py_space(c) {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.push(c);
            in_space = false;
        }
    }
    out
}

/// `extract_answer_tag`: the first `<answer>…</answer>` (any case, across lines), else the first
/// non-empty line after an unclosed `<answer>`. `Some("")` for an empty closed tag.
pub fn extract_answer_tag(text: &str) -> Option<String> {
    static STRICT: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?is)<answer>[\s\x1c-\x1f]*(.*?)[\s\x1c-\x1f]*</answer>").expect("valid regex")
    });
    static LOOSE: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?is)<answer>[\s\x1c-\x1f]*(.*)$").expect("valid regex"));
    if let Some(c) = STRICT.captures(text) {
        return Some(py_strip(&c[1]).to_string());
    }
    let chunk = LOOSE.captures(text)?;
    py_splitlines(py_strip(&chunk[1])).into_iter().map(py_strip).find(|l| !l.is_empty()).map(str::to_string)
}

/// `parse_mcq_letter`: the option letter (`A`… for `num_options` options) inside the answer tag,
/// else after "answer"/"final" (`Answer: c`), else the first standalone capital in the text; each
/// rule's first hit decides it, and a hit outside the options gives way to the next rule.
pub fn parse_mcq_letter(text: &str, num_options: usize) -> Option<char> {
    static CUE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?:(?i:answer)|[fF][iIıİ][nN][aA][lL])[\s\x1c-\x1f]*[:\-]?[\s\x1c-\x1f]*([A-Za-zſKıİ])")
            .expect("valid regex")
    });
    let valid = |c: char| c.is_ascii_uppercase() && ((c as u8 - b'A') as usize) < num_options;
    if let Some(tagged) = extract_answer_tag(text).filter(|t| !t.is_empty()) {
        if let Some(c) = standalone_capital(&py_strip(&tagged).to_uppercase()).filter(|&c| valid(c)) {
            return Some(c);
        }
    }
    let mut start = 0;
    while let Some(cap) = CUE.captures_at(text, start) {
        let letter = cap.get(1).expect("group 1 always takes part");
        if text[letter.end()..].chars().next().is_none_or(|n| !py_word(n)) {
            let upper: Vec<char> = letter.as_str().to_uppercase().chars().collect();
            if let [c] = upper[..] {
                if valid(c) {
                    return Some(c);
                }
            }
            break;
        }
        let whole = cap.get(0).expect("group 0");
        start = whole.start() + text[whole.start()..].chars().next().map_or(1, char::len_utf8);
    }
    standalone_capital(py_strip(text)).filter(|&c| valid(c))
}

/// `^(answer|final)\s*[:\-]\s*` removed, as `parse_freeform` does before normalising.
fn strip_answer_prefix(s: &str) -> &str {
    static PREFIX: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^(?:(?i:answer)|[fF][iIıİ][nN][aA][lL])[\s\x1c-\x1f]*[:\-][\s\x1c-\x1f]*")
            .expect("valid regex")
    });
    PREFIX.find(s).map_or(s, |m| &s[m.end()..])
}

/// `parse_freeform`: the normalised answer and whether it came from an answer tag (else from the
/// last non-empty line).
pub fn parse_freeform(text: &str) -> (String, bool) {
    if let Some(tagged) = extract_answer_tag(text).filter(|t| !t.is_empty()) {
        return (normalize_text(py_strip(strip_answer_prefix(&tagged))), true);
    }
    let last = py_splitlines(text).into_iter().map(py_strip).rfind(|l| !l.is_empty());
    match last {
        Some(line) => (normalize_text(py_strip(strip_answer_prefix(line))), false),
        None => (String::new(), false),
    }
}

/// The text of every `<answer>…</answer>` (case-sensitive; across lines when `dotall`).
fn answer_tags(text: &str, dotall: bool) -> impl Iterator<Item = &str> {
    static DOTALL: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?s)<answer>(.*?)</answer>").expect("valid regex"));
    static LINE: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"<answer>(.*?)</answer>").expect("valid regex"));
    let re = if dotall { &DOTALL } else { &LINE };
    re.captures_iter(text).map(|c| c.get(1).expect("group 1").as_str())
}

/// GRPO-CARE's `clean_text`: the last answer tag's text (or all of it), each `\n` then each `\r`
/// deleted after whitespace and turned into a space elsewhere, trimmed, trailing full stops
/// removed, lower-case.
pub fn clean_text(text: &str) -> String {
    let mut s = answer_tags(text, true).last().unwrap_or(text).to_string();
    for newline in ['\n', '\r'] {
        let mut out = String::with_capacity(s.len());
        let mut prev: Option<char> = None;
        for c in s.chars() {
            if c != newline {
                out.push(c);
            } else if !prev.is_some_and(py_space) {
                out.push(' ');
            }
            prev = Some(c);
        }
        s = out;
    }
    py_strip(&s).trim_end_matches('.').to_lowercase()
}

/// GRPO-CARE's accuracy reward: 1 when the completion's last answer tag (or the whole
/// completion) equals the solution's first single-line answer tag (or the whole solution)
/// after `clean_text`, else 0.
pub fn accuracy_reward(completion: &str, solution: &str) -> f64 {
    let truth = py_strip(answer_tags(solution, false).next().unwrap_or(solution));
    let answer = py_strip(answer_tags(completion, true).last().unwrap_or(completion));
    if clean_text(answer) == clean_text(truth) {
        1.0
    } else {
        0.0
    }
}

/// GRPO-CARE's format reward: 1 when the whole completion is `<think>…</think>` then
/// `<answer>…</answer>`, with only whitespace between, else 0.
pub fn format_reward(completion: &str) -> f64 {
    static FORMAT: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?s)^<think>.*?</think>[\s\x1c-\x1f]*<answer>.*?</answer>$").expect("valid regex")
    });
    if FORMAT.is_match(completion) {
        1.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn corpus() -> Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/medbridgerl/corpus.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// Every released function's output on every corpus completion, reproduced exactly.
    #[test]
    fn parsers_and_rewards_match_the_released_code_on_the_corpus() {
        let corpus = corpus();
        let cases = corpus["completions"].as_array().unwrap();
        assert!(cases.len() >= 100, "the corpus has {} completions", cases.len());
        let mut failures = Vec::new();
        for case in cases {
            let text = case["completion"].as_str().unwrap();
            let n = case["num_options"].as_u64().unwrap() as usize;
            let solution = case["solution"].as_str().unwrap();
            let (pred, tagged) = parse_freeform(text);
            let got = [
                ("extract_answer_tag", extract_answer_tag(text).map_or(Value::Null, Value::from)),
                (
                    "parse_mcq_letter",
                    parse_mcq_letter(text, n).map_or(Value::Null, |c| Value::from(c.to_string())),
                ),
                ("parse_freeform", serde_json::json!([pred, tagged])),
                ("normalize_text", Value::from(normalize_text(text))),
                ("clean_text", Value::from(clean_text(text))),
                (
                    "accuracy_reward",
                    Value::from(accuracy_reward(text, &format!("<answer>{solution}</answer>"))),
                ),
                ("format_reward", Value::from(format_reward(text))),
            ];
            for (name, value) in got {
                if value != case[name] {
                    failures
                        .push(format!("{name}({text:?}): got {value}, released code gives {}", case[name]));
                }
            }
        }
        assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
    }

    #[test]
    fn python_string_rules_are_kept() {
        assert_eq!(py_splitlines("a\r\nb\u{2028}c\u{1f}d\n"), ["a", "b", "c\u{1f}d"]);
        assert_eq!(py_strip("\u{1c} x \u{3000}"), "x");
        assert!(py_alnum('é') && py_alnum('²') && !py_alnum('_') && !py_alnum('\u{200b}'));
        assert_eq!(parse_mcq_letter("fİnal: b", 4), Some('B'));
        // The first cue decides its rule ("answers" reads as the letter S), so only rule 3 is left.
        assert_eq!(parse_mcq_letter("answers are wrong, final: b", 4), None);
        assert_eq!(parse_mcq_letter("answers are wrong, Final: B", 4), Some('B'));
    }
}
