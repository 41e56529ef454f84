//! Label regular expressions as Prometheus 2.42 reads them: Go's `regexp/syntax` (RE2
//! with Perl extensions, as `regexp.Compile` parses it), translated to the `regex`
//! crate's syntax.
//!
//! The two dialects look alike but differ in ways a query can see, so no label regex may
//! reach `regex::Regex::new` untranslated. [`translate`] parses a pattern exactly as Go
//! 1.19's parser does (the Go Debian built its Prometheus 2.42 with), refuses what Go
//! refuses, and writes what Go accepts so that the `regex` crate matches the same
//! strings:
//! - `\d`, `\s`, `\w` and `\b` are ASCII-only in Go (`\s` is `[\t\n\f\r ]`, without
//!   `\v`); the `regex` crate's are Unicode. They are spelled out as ASCII classes, and
//!   `\b`/`\B` become `(?-u:\b)`/`(?-u:\B)`.
//! - `\Q…\E` quotes literal text (to the end of the pattern without `\E`); the `regex`
//!   crate has no such syntax, so the text is written escaped.
//! - A `{` that does not start a well-formed repetition (`{,2}`, `a{`, `x{2,1`, `a{01}`)
//!   is a literal in Go; it is written escaped. Counts above 1000, and nested counts
//!   whose product exceeds 1000, are errors as in Go.
//! - Stacked repetition operators (`a**`, `a{2}{3}`) are errors in Go; the `regex`
//!   crate would accept them.
//! - Inside a bracket class, `[`, `&&`, `--` and `~~` are literal text in Go but nested
//!   classes and set operations in the `regex` crate; every literal there is escaped.
//! - Octal escapes (`\101`), `(?P<1>…)` capture names, flag groups such as `(?)` or
//!   `(?ii)`, and `\p{C}` (which in Go leaves out unassigned code points) are rewritten
//!   into equivalents; `(?<name>…)` (Go 1.22), `\pL`-style names Go does not know, and
//!   flags Go does not have (`x`, `u`, `R`) are errors, as in Go 1.19.
//!
//! Semantics that already agree are kept: `.` does not match `\n` unless `(?s)` (2.42
//! adds no flags; Prometheus 3 does), `^`/`$` match only at the ends of the text unless
//! `(?m)`, `(?i)` folds case with Unicode simple folding, POSIX classes are ASCII.
//!
//! Prometheus anchors a label regex by compiling `^(?:` + pattern + `)$` as one Go
//! pattern; [`compile_anchored`] does the same, so that even a pattern such as `a)|(b`
//! means here what it means there.

use std::fmt;

use regex::{Regex, RegexBuilder};

mod emit;
mod parse;

use emit::*;
use parse::*;

/// A pattern Go's `regexp.Compile` refuses (or, in theory, one the `regex` crate cannot
/// hold), with Go's wording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Re2Error {
    message: String,
}

impl Re2Error {
    fn new(code: &str, expr: impl AsRef<str>) -> Re2Error {
        Re2Error {
            message: format!("error parsing regexp: {code}: `{}`", expr.as_ref()),
        }
    }
}

impl fmt::Display for Re2Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Re2Error {}

/// Compiles `pattern` fully anchored, as Prometheus 2.42 compiles a label matcher's or
/// `label_replace`'s regex.
pub fn compile_anchored(pattern: &str) -> Result<Regex, Re2Error> {
    compile(&format!("^(?:{pattern})$"))
}

/// Compiles a label matcher's regex as Prometheus 2.42's `NewFastRegexMatcher` does: the
/// pattern must parse on its own as well as anchored (`e)|(A` is refused although
/// `^(?:e)|(A)$` would parse), then it matches anchored. `label_replace` checks only the
/// anchored form ([`compile_anchored`]).
pub fn compile_matcher(pattern: &str) -> Result<Regex, Re2Error> {
    translate(pattern)?;
    compile_anchored(pattern)
}

/// Compiles a Go pattern as it stands (unanchored).
pub fn compile(pattern: &str) -> Result<Regex, Re2Error> {
    let translated = translate(pattern)?;
    RegexBuilder::new(&translated)
        // Go allows 1000 levels of nesting; the translation adds at most one level per
        // repetition.
        .nest_limit(2 * MAX_NESTING as u32 + 8)
        // Go accepts `\pL{1000}`, which compiles to a few megabytes.
        .size_limit(64 << 20)
        .build()
        .map_err(|error| Re2Error {
            message: format!("error parsing regexp: {error}"),
        })
}

/// Translates a pattern in Go's syntax into the `regex` crate's, or says why Go refuses
/// it.
pub fn translate(pattern: &str) -> Result<String, Re2Error> {
    let mut parser = Parser {
        chars: pattern.chars().collect(),
        pos: 0,
        names: Vec::new(),
    };
    let top = parser.alternation(0)?;
    if parser.pos < parser.chars.len() {
        // Only an unmatched `)` stops the top-level alternation early.
        return Err(Re2Error::new("unexpected )", pattern));
    }
    let mut out = String::with_capacity(pattern.len() + 16);
    emit_alternation(&top, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_matcher_must_parse_on_its_own_too() {
        // Anchored, the parentheses balance; alone they do not, and 2.42 refuses it.
        assert!(compile_anchored("e)|(A").is_ok());
        let error = compile_matcher("e)|(A").unwrap_err().to_string();
        assert!(error.contains("unexpected )"), "{error}");
        assert!(compile_matcher("e|A").unwrap().is_match("A"));
    }

    /// Whether the anchored Go pattern matches `text`, as Go's `regexp` answers.
    fn matches(pattern: &str, text: &str) -> bool {
        compile_anchored(pattern)
            .unwrap_or_else(|error| panic!("{pattern:?} should compile: {error}"))
            .is_match(text)
    }

    fn refused(pattern: &str) -> bool {
        compile_anchored(pattern).is_err()
    }

    #[test]
    fn perl_classes_and_word_boundaries_are_ascii() {
        assert!(matches(r"\d+", "0123456789"));
        assert!(!matches(r"\d", "٣"), "Arabic-Indic three is no \\d in Go");
        assert!(matches(r"\D", "٣"));
        assert!(!matches(r"\w+", "é"));
        assert!(matches(r"\w+", "az_AZ09"));
        assert!(matches(r"\W", "é"));
        assert!(matches(r"\s", " ") && matches(r"\s", "\t") && matches(r"\s", "\n"));
        assert!(!matches(r"\s", "\u{A0}"), "no-break space is no \\s in Go");
        assert!(
            !matches(r"\s", "\x0B"),
            "Go's \\s leaves out the vertical tab"
        );
        assert!(matches(r"\S", "\x0B"));
        // Inside classes too, negated or not.
        assert!(!matches(r"[\d]", "٣"));
        assert!(matches(r"[^\d]", "٣"));
        assert!(matches(r"[\D]", "٣"));
        assert!(!matches(r"[^\D]", "٣"));
        assert!(matches(r"[\w-]+", "a-b"));
        assert!(!matches(r"[\w]", "é"));
        // `é` is no ASCII word character, so there is a boundary before `x`.
        assert!(matches(r".*\bx", "éx"));
        assert!(!matches(r".*\Bx", "éx"));
        assert!(matches(r"a\b", "a"));
        // POSIX classes are ASCII in both dialects.
        assert!(!matches(r"[[:alpha:]]", "é"));
        assert!(matches(r"[[:^digit:]]", "a"));
        // Case folding still applies to an ASCII class, Unicode-wide as in Go.
        assert!(matches(r"(?i)\w", "\u{212A}"), "Kelvin sign folds to k");
    }

    #[test]
    fn backslash_q_quotes_literal_text() {
        assert!(matches(r"\Qa.b\E", "a.b"));
        assert!(!matches(r"\Qa.b\E", "axb"));
        assert!(
            matches(r"\Q(*)\E+", "(*)))"),
            "the operator applies to the last rune"
        );
        assert!(matches(r"x\Q\E", "x"));
        assert!(matches(r"\Q\d{2}\E", r"\d{2}"));
        // Without `\E` the quote runs to the end: in Prometheus' anchored form it swallows
        // the closing `)$`, and Go refuses the pattern.
        assert!(refused(r"\Qa.b"));
        assert!(compile(r"\Qa.b").unwrap().is_match("xa.b"));
    }

    #[test]
    fn a_malformed_repetition_is_literal_text() {
        assert!(matches(r"x{,2}", "x{,2}"));
        assert!(!matches(r"x{,2}", "xx"));
        assert!(matches(r"a{", "a{"));
        assert!(matches(r"x{2,1", "x{2,1"));
        assert!(
            matches(r"a{01}", "a{01}"),
            "Go refuses leading zeros in counts"
        );
        assert!(matches(r"a{}", "a{}"));
        assert!(matches(r"a{x}", "a{x}"));
        assert!(matches(r"a{2}", "aa"));
        assert!(matches(r"a{2,}", "aaaa"));
        assert!(matches(r"a{1,3}?", "aaa"));
        assert!(matches(r"a{0}", ""));
        assert!(matches(r"a\{2}", "a{2}"));
        assert!(matches(r"a{2}{", "aa{"));
    }

    #[test]
    fn what_go_refuses_is_refused() {
        for pattern in [
            r"x{2,1}",
            r"a{1001}",
            r"a{100000000000}",
            r"(a{100}){11}",
            r"a{2}{3}",
            r"a**",
            r"a*?*",
            r"a+*",
            r"*a",
            r"a|*",
            r"(*)",
            r"{2}",
            r"(",
            r")",
            r"a)",
            r"[a",
            r"[z-a]",
            r"[[:foo:]]",
            r"\1",
            r"\8",
            r"\Z",
            r"\C",
            r"\e",
            r"\é",
            r"[\b]",
            r"\p{greek}",
            r"\p{Letter}",
            r"\pX",
            r"(?<name>x)",
            r"(?P<>x)",
            r"(?P<a-b>x)",
            r"(?x)a",
            r"(?i-)a",
            r"(?--i)a",
            r"(?=a)",
            r"x\",
        ] {
            assert!(refused(pattern), "Go refuses {pattern:?}");
        }
    }

    #[test]
    fn go_syntax_the_regex_crate_spells_differently_is_accepted() {
        assert!(matches(r"\101\x42\x{43}", "ABC"));
        assert!(matches(r"\0", "\0"));
        assert!(matches(r"\_\<\>", "_<>"));
        assert!(matches(r"[a&&b]+", "a&b"), "`&&` is no intersection in Go");
        assert!(matches(r"[ab-]+", "a-b"));
        assert!(refused(r"[a--b]"), "in Go a range from `a` down to `-`");
        assert!(matches(r"[a~~b]+", "~"));
        assert!(matches(r"[[a]+", "[a"));
        assert!(matches(r"[]a]+", "]a"));
        assert!(matches(r"[^]a]", "b"));
        assert!(matches(r"[a-]+", "-a"));
        assert!(matches(r"[\d-z]+", "1-z"));
        assert!(
            matches(r"[[:alpha]", "["),
            "without `:]` the `[` is a literal"
        );
        assert!(matches(r"(?P<1>x)", "x"));
        assert!(matches(r"(?P<a>x)(?P<a>y)", "xy"));
        assert!(matches(r"(?)a", "a"));
        assert!(matches(r"(?ii)a", "A"));
        assert!(!matches(r"(?i-i)a", "A"));
        assert!(matches(r"(?i:a)(?-i)b", "Ab"));
        assert!(matches(r"a*(?i)*", "aa"), "the flag group is no operand");
        assert!(matches(r"^*a", "a"));
        assert!(matches(r"\b+a", "a"));
        assert!(matches(r"()*", ""));
        assert!(matches(r"#& ~", "#& ~"));
        assert!(matches(r"\pL\p{Greek}\PL\p{^L}", "éα11"));
        assert!(matches(r"\p{Any}", "\n"));
        // Go's `C` has no unassigned code points.
        assert!(!matches(r"\p{C}", "\u{0378}"));
        assert!(matches(r"\p{C}", "\u{E000}"));
        assert!(!matches(r"\p{Cs}", "a"));
        assert!(matches(r"\P{Cs}", "a"));
    }

    #[test]
    fn anchoring_and_newlines_follow_prometheus_2_42() {
        // `.` does not match a newline (Prometheus 3 adds `(?s)`; 2.42 does not).
        assert!(!matches(r".*", "a\nb"));
        assert!(matches(r"(?s).*", "a\nb"));
        assert!(matches(r"a\nb", "a\nb"));
        assert!(matches(r"[^x]", "\n"));
        // `$` is the end of the text, not of a line.
        assert!(!matches(r"a", "a\n"));
        assert!(matches(r"(?m)a$\n?", "a\n"));
        // The pattern is spliced into `^(?:…)$` as text, as Prometheus does.
        assert!(matches(r"a)|(b", "ax"));
        assert!(matches(r"a)|(b", "xb"));
        assert!(!matches(r"a)|(b", "xa"));
        assert!(matches(r"a|b", "b"));
        assert!(!matches(r"a|b", "ab"));
    }

    #[test]
    fn translations_read_as_expected() {
        let cases = [
            (r"\d", "[0-9]"),
            (r"a.b", "a.b"),
            (r"\Q.\E", r"\."),
            (r"x{,2}", r"x\{,2\}"),
            (r"[a&&b]", r"[a\&\&b]"),
            (r"(?P<n>x)", "(?P<n>x)"),
            (r"(?is-m:x)", "(?is-m:x)"),
            (r"\b", r"(?-u:\b)"),
            (r"\b*", r"(?:(?-u:\b))*"),
            (r"a{2,3}?", "a{2,3}?"),
        ];
        for (go, rust) in cases {
            assert_eq!(translate(go).unwrap(), rust, "translating {go:?}");
        }
    }
}
