//! Query text as Prometheus 2.42 reads it, made acceptable to `promql-parser`.
//!
//! Two of the parser's habits disagree with Prometheus on string literals:
//! - A backtick string is raw in Prometheus (a backslash is text, the string ends at the
//!   next backtick), but the parser's lexer reads escapes in it, so `` `\d` `` is an
//!   "unknown escape sequence" and `` `\` `` never ends. [`prepare`] rewrites every
//!   backtick string into the double-quoted string with the same value.
//! - The parser compiles a matcher's regex with the `regex` crate and refuses what that
//!   crate refuses, while Go's syntax is the one that counts (`\Q…\E`, `\101`, …). Each
//!   `=~`/`!~` literal is therefore set aside, its value checked and compiled by
//!   [`metronome_core::re2`], and replaced by a placeholder the parser accepts;
//!   [`restore`] puts the value and the translated regex back into the parsed matchers.

use metronome_core::re2;
use promql_parser::label::MatchOp;
use promql_parser::parser::{Expr, VectorSelector};
use promql_parser::util::unquote_string;
use regex::Regex;

/// Starts every placeholder; a private-use character, so that it reads as plain text to
/// the `regex` crate and cannot be confused with a value (every regex literal of the
/// query is replaced, so a placeholder found in a regex matcher is always ours).
const PLACEHOLDER: char = '\u{E000}';

/// The escapes the parser's lexer accepts in a `"` or `'` string (besides the quote).
const LEXER_ESCAPES: &str = r"abfnrtv\01234567xuU";

/// A query ready for `promql-parser`, with its label regexes set aside.
pub(super) struct Prepared {
    pub text: String,
    /// The Go pattern of each regex literal, with its translation.
    regexes: Vec<(String, Regex)>,
}

/// Rewrites backtick strings and sets regex literals aside; refuses a regex Go refuses,
/// with Go's message, as Prometheus refuses it at parse time.
pub(super) fn prepare(text: &str) -> Result<Prepared, String> {
    let mut out = String::with_capacity(text.len());
    let mut regexes = Vec::new();
    // Whether the last token was `=~` or `!~`, so that the next string is a regex.
    let mut regex_next = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        match c {
            '#' => {
                // A comment runs to the end of the line; it holds no strings.
                let end = rest.find('\n').unwrap_or(rest.len());
                out.push_str(&rest[..end]);
                rest = &rest[end..];
            }
            '"' | '\'' | '`' => {
                let Some(end) = literal_end(rest, c) else {
                    // Unterminated: the parser says so.
                    out.push_str(rest);
                    break;
                };
                let literal = &rest[..end];
                rest = &rest[end..];
                let literal = if c == '`' {
                    double_quoted(&literal[1..literal.len() - 1])
                } else {
                    literal.to_string()
                };
                let value = (regex_next && lexer_accepts(&literal))
                    .then(|| unquote_string(&literal).ok())
                    .flatten();
                match value {
                    Some(pattern) => {
                        let regex = re2::compile_matcher(&pattern).map_err(|error| {
                            format!("invalid regular expression {pattern:?}: {error}")
                        })?;
                        // The parser refuses a selector whose matchers all match the
                        // empty string, so the placeholder must agree with the regex.
                        let empty = if regex.is_match("") { "|" } else { "" };
                        out.push_str(&format!("\"{PLACEHOLDER}{}{empty}\"", regexes.len()));
                        regexes.push((pattern, regex));
                    }
                    None => out.push_str(&literal),
                }
                regex_next = false;
            }
            '=' | '!' if rest[1..].starts_with('~') => {
                out.push_str(&rest[..2]);
                rest = &rest[2..];
                regex_next = true;
            }
            c => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
                if !c.is_whitespace() {
                    regex_next = false;
                }
            }
        }
    }
    Ok(Prepared { text: out, regexes })
}

/// Puts the regexes [`prepare`] set aside back into the parsed query's matchers.
pub(super) fn restore(expr: &mut Expr, prepared: &Prepared) {
    match expr {
        Expr::Aggregate(aggregate) => {
            restore(&mut aggregate.expr, prepared);
            if let Some(param) = &mut aggregate.param {
                restore(param, prepared);
            }
        }
        Expr::Unary(unary) => restore(&mut unary.expr, prepared),
        Expr::Binary(binary) => {
            restore(&mut binary.lhs, prepared);
            restore(&mut binary.rhs, prepared);
        }
        Expr::Paren(paren) => restore(&mut paren.expr, prepared),
        Expr::Subquery(subquery) => restore(&mut subquery.expr, prepared),
        Expr::VectorSelector(selector) => restore_selector(selector, prepared),
        Expr::MatrixSelector(matrix) => restore_selector(&mut matrix.vs, prepared),
        Expr::Call(call) => {
            for arg in &mut call.args.args {
                restore(arg, prepared);
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn restore_selector(selector: &mut VectorSelector, prepared: &Prepared) {
    let matchers = &mut selector.matchers;
    for matcher in matchers
        .matchers
        .iter_mut()
        .chain(matchers.or_matchers.iter_mut().flatten())
    {
        let index = matcher
            .value
            .strip_prefix(PLACEHOLDER)
            .map(|rest| rest.trim_end_matches('|'))
            .and_then(|index| index.parse::<usize>().ok());
        let Some((pattern, regex)) = index.and_then(|index| prepared.regexes.get(index)) else {
            continue;
        };
        match matcher.op {
            MatchOp::Re(_) => matcher.op = MatchOp::Re(regex.clone()),
            MatchOp::NotRe(_) => matcher.op = MatchOp::NotRe(regex.clone()),
            MatchOp::Equal | MatchOp::NotEqual => continue,
        }
        matcher.value = pattern.clone();
    }
}

/// The length of the string literal `text` starts with (quotes included), if it ends.
fn literal_end(text: &str, quote: char) -> Option<usize> {
    let mut chars = text.char_indices().skip(1);
    while let Some((index, c)) = chars.next() {
        if c == '\\' && quote != '`' {
            chars.next();
        } else if c == quote {
            return Some(index + 1);
        }
    }
    None
}

/// The double-quoted literal whose value is `raw`, the inside of a backtick string.
fn double_quoted(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() + 2);
    out.push('"');
    for c in raw.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str(r"\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Whether the parser's lexer would accept the escapes of a `"` or `'` literal; one it
/// would refuse is left for it to refuse.
fn lexer_accepts(literal: &str) -> bool {
    let quote = literal.chars().next();
    let mut chars = literal.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(escaped) if Some(escaped) == quote || LEXER_ESCAPES.contains(escaped) => {}
                _ => return false,
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Expr, String> {
        let prepared = prepare(text)?;
        let mut expr = promql_parser::parser::parse(&prepared.text)?;
        restore(&mut expr, &prepared);
        Ok(expr)
    }

    fn matcher_values(text: &str) -> Vec<String> {
        let Expr::VectorSelector(selector) = parse(text).unwrap() else {
            panic!("a selector was expected")
        };
        selector
            .matchers
            .matchers
            .iter()
            .map(|matcher| matcher.value.clone())
            .collect()
    }

    #[test]
    fn backtick_strings_are_raw() {
        assert_eq!(matcher_values(r"up{a=~`\d+`}"), [r"\d+"]);
        assert_eq!(matcher_values(r"up{a=`x\y`}"), [r"x\y"]);
        assert_eq!(matcher_values(r#"up{a=`say "hi"`}"#), [r#"say "hi""#]);
        // A backslash does not escape the closing backtick.
        assert_eq!(matcher_values(r"up{a=`x\`}"), [r"x\"]);
        let Expr::StringLiteral(literal) = parse(r"`a\nb`").unwrap() else {
            panic!("a string was expected")
        };
        assert_eq!(literal.val, r"a\nb");
    }

    #[test]
    fn regexes_go_accepts_reach_the_matchers_untranslated() {
        assert_eq!(
            matcher_values(r#"up{a=~"\\Qa.b\\E", b!~'x{,2}', c=~"\\101"}"#),
            [r"\Qa.b\E", "x{,2}", r"\101"]
        );
        let Expr::VectorSelector(selector) = parse(r#"up{a=~"\\Qa.b\\E"}"#).unwrap() else {
            panic!("a selector was expected")
        };
        assert!(selector.matchers.matchers[0].is_match("a.b"));
        assert!(!selector.matchers.matchers[0].is_match("axb"));
    }

    #[test]
    fn regexes_go_refuses_are_refused() {
        assert!(parse(r#"up{a=~"a**"}"#).is_err());
        assert!(parse(r#"up{a=~"(?<n>x)"}"#).is_err());
        assert!(parse(r#"up{a=~"("}"#).is_err());
    }

    #[test]
    fn a_selector_of_only_empty_matching_regexes_is_still_refused() {
        assert!(parse(r#"{a=~".*"}"#).is_err());
        assert!(parse(r#"{a=~"x{,2}|"}"#).is_err());
        assert!(parse(r#"{a=~".+"}"#).is_ok());
    }

    #[test]
    fn strings_elsewhere_are_left_alone() {
        assert_eq!(matcher_values(r#"up{a="=~", b=~"x"} # =~ "("#), ["=~", "x"]);
        assert!(parse(r#"label_replace(up, "a", "$1", "b", "(")"#).is_ok());
    }
}
