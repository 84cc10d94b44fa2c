//! Finds the chosen option in a model's free-form answer to a multiple-choice question.
//!
//! The rules are tried in a fixed order and the first that finds a letter in range wins:
//! 1. `<answer>X</answer>` (the last such tag; its content is then read by rules 2-5 and nothing
//!    else is consulted, because the tag is the model's declared answer);
//! 2. a lone letter (`C`, `(C)`, `**C**`, `c.`);
//! 3. `X.` / `X)` / `(X)` at the start;
//! 4. "the answer is X" or "answer: X" (case-insensitive phrase, last occurrence);
//! 5. the exact text of one option (case-insensitive, trimmed, final full stop ignored).
//!
//! Rules 2-5 read only what follows a `</think>` block, so reasoning that weighs several options
//! is not mistaken for the answer. A completion no rule reads is wrong and a format failure.
//! The task owns its `Extractor`, so evaluation and RL rewards read answers the same way.

/// One extraction rule; an `Extractor` lists the ones it applies, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    AnswerTag,
    LoneLetter,
    LeadingLetter,
    AnswerIs,
    OptionText,
}

impl Rule {
    pub const ALL: [Rule; 5] =
        [Rule::AnswerTag, Rule::LoneLetter, Rule::LeadingLetter, Rule::AnswerIs, Rule::OptionText];
}

/// What was read from one completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extraction {
    /// Index of the chosen option, if any rule found one in range.
    pub choice: Option<usize>,
    /// True when an answer was found and, if the task requires it, a closed `<think>` block came
    /// before it.
    pub format_ok: bool,
    /// The rule that found the answer.
    pub rule: Option<Rule>,
}

/// Per-task extraction settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extractor {
    pub rules: Vec<Rule>,
    /// Count an answer without a preceding `<think>...</think>` as a format failure (its choice
    /// still counts for accuracy).
    pub require_think: bool,
}

impl Default for Extractor {
    fn default() -> Self {
        Extractor { rules: Rule::ALL.to_vec(), require_think: false }
    }
}

/// The letter of option `i`: A, B, C, ...
pub fn option_letter(i: usize) -> char {
    (b'A' + (i % 26) as u8) as char
}

impl Extractor {
    pub fn extract(&self, completion: &str, options: &[String]) -> Extraction {
        let n = options.len();
        let think_closed = find_ci(completion, "</think>").last();
        let found = if let Some(content) =
            self.rules.contains(&Rule::AnswerTag).then(|| answer_tag(completion)).flatten()
        {
            self.after_tag(content, options).map(|c| (c, Rule::AnswerTag))
        } else {
            let body = after_think(completion);
            self.rules
                .iter()
                .filter(|r| **r != Rule::AnswerTag)
                .find_map(|&r| apply(r, body, options).map(|c| (c, r)))
        };
        let found = found.filter(|(c, _)| *c < n);
        let thought = think_closed.is_some_and(|at| find_ci(&completion[..at], "<think>").next().is_some());
        Extraction {
            choice: found.map(|(c, _)| c),
            format_ok: found.is_some() && (!self.require_think || thought),
            rule: found.map(|(_, r)| r),
        }
    }

    fn after_tag(&self, content: &str, options: &[String]) -> Option<usize> {
        let inner = [Rule::LoneLetter, Rule::LeadingLetter, Rule::AnswerIs, Rule::OptionText];
        inner.iter().filter(|r| self.rules.contains(r)).find_map(|&r| apply(r, content, options))
    }
}

fn apply(rule: Rule, text: &str, options: &[String]) -> Option<usize> {
    let n = options.len();
    let in_range = |i: usize| (i < n).then_some(i);
    match rule {
        Rule::AnswerTag => None,
        Rule::LoneLetter => lone_letter(text).and_then(in_range),
        Rule::LeadingLetter => leading_letter(text).and_then(in_range),
        Rule::AnswerIs => answer_is(text).and_then(in_range),
        Rule::OptionText => {
            let said = normalise(text);
            options.iter().position(|o| !said.is_empty() && normalise(o) == said)
        }
    }
}

/// What follows the last `</think>`; nothing if a `<think>` was never closed.
fn after_think(completion: &str) -> &str {
    match find_ci(completion, "</think>").last() {
        Some(at) => &completion[at + "</think>".len()..],
        None if find_ci(completion, "<think>").next().is_some() => "",
        None => completion,
    }
}

/// The free-text answer of a completion: the last `<answer>` tag's content, else what follows the
/// reasoning; trimmed, without a final full stop.
pub fn answer_text(completion: &str) -> String {
    let body = answer_tag(completion).unwrap_or_else(|| after_think(completion));
    body.trim().trim_end_matches('.').trim().to_string()
}

/// Byte offsets of case-insensitive (ASCII) matches of `needle`.
fn find_ci<'a>(hay: &'a str, needle: &'a str) -> impl Iterator<Item = usize> + 'a {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    (0..h.len().saturating_sub(n.len() - 1)).filter(move |&i| h[i..i + n.len()].eq_ignore_ascii_case(n))
}

/// Content of the last `<answer>` tag, up to its `</answer>` or the end of the text.
fn answer_tag(text: &str) -> Option<&str> {
    let open = find_ci(text, "<answer>").last()?;
    let rest = &text[open + "<answer>".len()..];
    let end = find_ci(rest, "</answer>").next().unwrap_or(rest.len());
    Some(&rest[..end])
}

const DECORATION: &[char] = &['*', '_', '`', '"', '\'', '$', ' ', '\n', '\t', '\r'];

fn letter_index(c: char) -> Option<usize> {
    c.is_ascii_alphabetic().then(|| (c.to_ascii_uppercase() as u8 - b'A') as usize)
}

fn lone_letter(text: &str) -> Option<usize> {
    let mut t = text.trim_matches(DECORATION).trim_end_matches(['.', ':']);
    t = t.trim_matches(DECORATION);
    if let Some(inner) = t.strip_prefix('(').and_then(|s| s.strip_suffix(')')) {
        t = inner.trim();
    }
    let mut chars = t.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => letter_index(c),
        _ => None,
    }
}

fn leading_letter(text: &str) -> Option<usize> {
    let t = text.trim_start_matches(DECORATION);
    let b = t.as_bytes();
    let boundary = |i: usize| b.get(i).is_none_or(|c| !c.is_ascii_alphanumeric());
    match b {
        [b'(', c, b')', ..] if c.is_ascii_uppercase() && boundary(3) => letter_index(*c as char),
        [c, b'.' | b')', ..] if c.is_ascii_uppercase() && boundary(2) => letter_index(*c as char),
        _ => None,
    }
}

fn answer_is(text: &str) -> Option<usize> {
    let mut hits: Vec<usize> = find_ci(text, "answer is").map(|i| i + "answer is".len()).collect();
    hits.extend(find_ci(text, "answer:").map(|i| i + "answer:".len()));
    let start = hits.into_iter().max()?;
    let mut rest = text[start..].trim_start_matches([' ', ':', '*', '"', '\'', '(', '$', '\n']);
    for prefix in ["\\boxed{", "\\text{", "option ", "choice ", "letter "] {
        if rest.get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix)) {
            rest = rest[prefix.len()..].trim_start_matches(['(', ' ', '*']);
        }
    }
    let b = rest.as_bytes();
    match b {
        [c, ..] if c.is_ascii_uppercase() && b.get(1).is_none_or(|n| !n.is_ascii_alphanumeric()) => {
            letter_index(*c as char)
        }
        _ => None,
    }
}

/// Lower-case, trimmed, markdown and a final full stop removed, inner spaces collapsed.
fn normalise(text: &str) -> String {
    let t = text.trim_matches(DECORATION).trim_end_matches('.').trim_matches(DECORATION);
    t.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Vec<String> {
        ["melanoma", "basal cell carcinoma", "dermatofibroma", "vascular lesions"].map(String::from).to_vec()
    }

    /// (completion, expected letter or None): outputs in the shapes models actually produce.
    const TABLE: &[(&str, Option<char>)] = &[
        ("<answer>C</answer>", Some('C')),
        ("<think>The lesion is pigmented and asymmetric.</think><answer>A</answer>", Some('A')),
        ("<think>\nB looks plausible but the borders...\n</think>\n<answer> D </answer>", Some('D')),
        ("<answer>(B)</answer>", Some('B')),
        ("<answer>B. basal cell carcinoma</answer>", Some('B')),
        ("<answer>dermatofibroma</answer>", Some('C')),
        ("<answer>The answer is D</answer>", Some('D')),
        ("<answer>E</answer>", None),
        ("<answer>I am not sure</answer> The answer is A", None),
        ("<answer>A</answer> wait, <answer>C</answer>", Some('C')),
        ("<answer>B", Some('B')),
        ("C", Some('C')),
        ("  b  ", Some('B')),
        ("(D)", Some('D')),
        ("**A**", Some('A')),
        ("A.", Some('A')),
        ("F", None),
        ("B. Basal cell carcinoma, given the pearly border.", Some('B')),
        ("C) dermatofibroma", Some('C')),
        ("(A) melanoma", Some('A')),
        ("A lesion with irregular borders suggests melanoma.", None),
        ("The answer is C.", Some('C')),
        ("Looking at the colour and border, the correct answer is (B).", Some('B')),
        ("answer: D", Some('D')),
        ("Answer: **A**", Some('A')),
        ("The final answer is $\\boxed{C}$", Some('C')),
        ("The answer is option B", Some('B')),
        ("The answer is a melanoma.", None),
        ("I think the answer is A, no wait, the answer is D.", Some('D')),
        ("Melanoma", Some('A')),
        ("vascular lesions.", Some('D')),
        ("  Basal Cell Carcinoma ", Some('B')),
        ("It could be melanoma or dermatofibroma.", None),
        ("<think>Option A is melanoma; the answer is A?</think>\nB", Some('B')),
        ("<think>The answer is A because", None),
        ("", None),
        ("I cannot determine this from the image.", None),
        ("The answer is G", None),
    ];

    #[test]
    fn reads_the_letters_models_write() {
        let ex = Extractor::default();
        for (completion, expected) in TABLE {
            let got = ex.extract(completion, &options());
            let want = expected.map(|c| (c as u8 - b'A') as usize);
            assert_eq!(got.choice, want, "{completion:?}");
            assert_eq!(got.format_ok, want.is_some(), "{completion:?}");
        }
        assert!(TABLE.len() >= 30);
    }

    #[test]
    fn require_think_flags_missing_reasoning_but_keeps_the_choice() {
        let ex = Extractor { require_think: true, ..Default::default() };
        let bare = ex.extract("<answer>B</answer>", &options());
        assert_eq!((bare.choice, bare.format_ok), (Some(1), false));
        let good = ex.extract("<think>pearly border</think><answer>B</answer>", &options());
        assert_eq!((good.choice, good.format_ok, good.rule), (Some(1), true, Some(Rule::AnswerTag)));
    }

    #[test]
    fn rules_can_be_turned_off_per_task() {
        let letters_only = Extractor { rules: vec![Rule::AnswerTag, Rule::LoneLetter], require_think: false };
        assert_eq!(letters_only.extract("melanoma", &options()).choice, None);
        assert_eq!(letters_only.extract("The answer is A", &options()).choice, None);
        assert_eq!(letters_only.extract("<answer>A</answer>", &options()).choice, Some(0));
        assert_eq!(option_letter(2), 'C');
    }
}
