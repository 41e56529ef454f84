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

/// Go's limit on repetition counts, and on their product when repetitions nest.
const MAX_REPEAT: i64 = 1000;
/// Go's limit on nesting depth (`maxHeight`).
const MAX_NESTING: usize = 1000;

/// One element of a concatenation, already in the `regex` crate's terms where that is
/// a plain string.
#[derive(Debug)]
enum Node {
    Literal(char),
    /// A class or `.`, as `regex` syntax.
    Class(String),
    /// A zero-width assertion, as `regex` syntax.
    Assertion(&'static str),
    /// A group: its opening (`(`, `(?:`, `(?i-s:`, `(?P<name>`) and its alternatives.
    Group {
        open: String,
        alternatives: Vec<Vec<Node>>,
    },
    /// A flag change such as `(?i)`, effective to the end of the enclosing group.
    Flags(String),
    Repeat {
        sub: Box<Node>,
        /// The operator as written in `regex` syntax, non-greedy `?` included.
        op: String,
        /// `{min,max}` counts (max -1 when open), for Go's nesting limit.
        counts: Option<(i64, i64)>,
    },
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    /// The capture names seen so far.
    names: Vec<String>,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    /// The source text from `from` to the current position, for error messages.
    fn text(&self, from: usize) -> String {
        self.chars[from..self.pos.min(self.chars.len())]
            .iter()
            .collect()
    }

    fn rest_starts_with(&self, prefix: &str) -> bool {
        prefix
            .chars()
            .enumerate()
            .all(|(i, c)| self.chars.get(self.pos + i) == Some(&c))
    }

    /// Alternatives up to a `)` or the end; `depth` counts the enclosing groups.
    fn alternation(&mut self, depth: usize) -> Result<Vec<Vec<Node>>, Re2Error> {
        let mut alternatives = vec![self.concatenation(depth)?];
        while self.peek() == Some('|') {
            self.pos += 1;
            alternatives.push(self.concatenation(depth)?);
        }
        Ok(alternatives)
    }

    fn concatenation(&mut self, depth: usize) -> Result<Vec<Node>, Re2Error> {
        let mut items: Vec<Node> = Vec::new();
        // Go refuses a repetition operator right after another (`a**`, `a+?+`), but
        // not after a flag group in between (`a*(?i)*` repeats `a*`).
        let mut last_was_repeat = false;
        while let Some(c) = self.peek() {
            let start = self.pos;
            let mut is_repeat = false;
            match c {
                '|' | ')' => break,
                '(' => {
                    if depth + 1 > MAX_NESTING {
                        return Err(Re2Error::new("expression nests too deeply", ""));
                    }
                    match self.group_opening()? {
                        GroupOpening::Flags(flags) => {
                            if !flags.is_empty() {
                                items.push(Node::Flags(flags));
                            }
                        }
                        GroupOpening::Group(open) => {
                            let alternatives = self.alternation(depth + 1)?;
                            if self.peek() != Some(')') {
                                return Err(Re2Error::new(
                                    "missing closing )",
                                    self.chars.iter().collect::<String>(),
                                ));
                            }
                            self.pos += 1;
                            items.push(Node::Group { open, alternatives });
                        }
                    }
                }
                '^' => {
                    self.pos += 1;
                    items.push(Node::Assertion("^"));
                }
                '$' => {
                    self.pos += 1;
                    items.push(Node::Assertion("$"));
                }
                '.' => {
                    self.pos += 1;
                    items.push(Node::Class(".".to_string()));
                }
                '[' => {
                    let class = self.class()?;
                    items.push(Node::Class(class));
                }
                '*' | '+' | '?' => {
                    self.pos += 1;
                    let mut op = c.to_string();
                    if self.peek() == Some('?') {
                        self.pos += 1;
                        op.push('?');
                    }
                    self.repeat(&mut items, op, None, start, last_was_repeat)?;
                    is_repeat = true;
                }
                '{' => match self.repeat_counts() {
                    None => {
                        // Not a well-formed repetition: Go reads the `{` as a literal.
                        self.pos = start + 1;
                        items.push(Node::Literal('{'));
                    }
                    Some((min, max)) => {
                        if !(0..=MAX_REPEAT).contains(&min)
                            || max > MAX_REPEAT
                            || (max >= 0 && min > max)
                        {
                            return Err(Re2Error::new("invalid repeat count", self.text(start)));
                        }
                        let mut op = match max {
                            -1 => format!("{{{min},}}"),
                            max if max == min => format!("{{{min}}}"),
                            max => format!("{{{min},{max}}}"),
                        };
                        if self.peek() == Some('?') {
                            self.pos += 1;
                            op.push('?');
                        }
                        self.repeat(&mut items, op, Some((min, max)), start, last_was_repeat)?;
                        is_repeat = true;
                    }
                },
                '\\' => self.escape(&mut items)?,
                _ => {
                    self.pos += 1;
                    items.push(Node::Literal(c));
                }
            }
            last_was_repeat = is_repeat;
        }
        Ok(items)
    }

    /// Applies a repetition operator to the last item, as Go's `parser.repeat` does.
    fn repeat(
        &self,
        items: &mut [Node],
        op: String,
        counts: Option<(i64, i64)>,
        start: usize,
        last_was_repeat: bool,
    ) -> Result<(), Re2Error> {
        if last_was_repeat {
            return Err(Re2Error::new(
                "invalid nested repetition operator",
                self.text(start),
            ));
        }
        // A flag group is no operand: the operator applies to what came before it.
        let Some(index) = items
            .iter()
            .rposition(|item| !matches!(item, Node::Flags(_)))
        else {
            return Err(Re2Error::new(
                "missing argument to repetition operator",
                self.text(start),
            ));
        };
        let sub = std::mem::replace(&mut items[index], Node::Literal('\0'));
        let node = Node::Repeat {
            sub: Box::new(sub),
            op,
            counts,
        };
        if let Some((min, max)) = counts {
            if (min >= 2 || max >= 2) && !repeat_is_valid(&node, MAX_REPEAT) {
                return Err(Re2Error::new("invalid repeat count", self.text(start)));
            }
        }
        items[index] = node;
        Ok(())
    }

    /// Parses `{min}`, `{min,}` or `{min,max}` at the current position as Go's
    /// `parseRepeat` does: `None` (and the position unspecified) when it is not one; a
    /// count too large for Go is returned as -1.
    fn repeat_counts(&mut self) -> Option<(i64, i64)> {
        self.pos += 1;
        let min = self.integer()?;
        let max;
        match self.peek()? {
            ',' => {
                self.pos += 1;
                match self.peek()? {
                    '}' => max = -1,
                    _ => {
                        let value = self.integer()?;
                        if value < 0 {
                            // Go marks the whole repetition as too large.
                            if self.peek()? != '}' {
                                return None;
                            }
                            self.pos += 1;
                            return Some((-1, value));
                        }
                        max = value;
                    }
                }
            }
            _ => max = min,
        }
        if self.peek()? != '}' {
            return None;
        }
        self.pos += 1;
        Some((min, max))
    }

    /// Decimal digits without a leading zero (Go's `parseInt`); -1 when above 10^8.
    fn integer(&mut self) -> Option<i64> {
        let first = self.peek().filter(char::is_ascii_digit)?;
        if first == '0' && self.peek_at(1).is_some_and(|c| c.is_ascii_digit()) {
            return None;
        }
        let mut value: i64 = 0;
        while let Some(digit) = self.peek().and_then(|c| c.to_digit(10)) {
            self.pos += 1;
            if value >= 0 {
                value = if value >= 100_000_000 {
                    -1
                } else {
                    value * 10 + i64::from(digit)
                };
            }
        }
        Some(value)
    }

    /// After `(`: a flag change, or the opening of a group (Go's `parsePerlFlags`).
    fn group_opening(&mut self) -> Result<GroupOpening, Re2Error> {
        let start = self.pos;
        self.pos += 1;
        if self.peek() != Some('?') {
            return Ok(GroupOpening::Group("(".to_string()));
        }
        if self.chars.len() - start > 4
            && self.peek_at(1) == Some('P')
            && self.peek_at(2) == Some('<')
        {
            let Some(end) = self.chars[start..].iter().position(|&c| c == '>') else {
                return Err(Re2Error::new(
                    "invalid named capture",
                    self.chars[start..].iter().collect::<String>(),
                ));
            };
            let name: String = self.chars[start + 4..start + end].iter().collect();
            self.pos = start + end + 1;
            if name.is_empty() || !name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric()) {
                return Err(Re2Error::new("invalid named capture", self.text(start)));
            }
            // The `regex` crate wants a name to start with a letter or `_` and to be
            // unique; Go wants neither (`(?P<1>x)`, `(?P<a>x)(?P<a>y)`, where `$a` is the
            // first). Such a group keeps its number and loses its name.
            let open =
                if name.starts_with(|c: char| c.is_ascii_digit()) || self.names.contains(&name) {
                    "(".to_string()
                } else {
                    self.names.push(name.clone());
                    format!("(?P<{name}>")
                };
            return Ok(GroupOpening::Group(open));
        }
        self.pos += 1;
        // Each of Go's flags ends up set, cleared or untouched; the last mention wins.
        let mut flags: Vec<(char, bool)> = Vec::new();
        let mut negated = false;
        let mut saw_flag = false;
        while let Some(c) = self.peek() {
            self.pos += 1;
            match c {
                'i' | 'm' | 's' | 'U' => {
                    flags.retain(|(flag, _)| *flag != c);
                    flags.push((c, !negated));
                    saw_flag = true;
                }
                '-' if !negated => {
                    negated = true;
                    saw_flag = false;
                }
                ':' | ')' if !negated || saw_flag => {
                    let set: String = flags.iter().filter(|f| f.1).map(|f| f.0).collect();
                    let cleared: String = flags.iter().filter(|f| !f.1).map(|f| f.0).collect();
                    let mut spec = set;
                    if !cleared.is_empty() {
                        spec.push('-');
                        spec.push_str(&cleared);
                    }
                    return Ok(if c == ':' {
                        if spec.is_empty() {
                            GroupOpening::Group("(?:".to_string())
                        } else {
                            GroupOpening::Group(format!("(?{spec}:"))
                        }
                    } else if spec.is_empty() {
                        GroupOpening::Flags(String::new())
                    } else {
                        GroupOpening::Flags(format!("(?{spec})"))
                    });
                }
                _ => break,
            }
        }
        Err(Re2Error::new(
            "invalid or unsupported Perl syntax",
            self.text(start),
        ))
    }

    /// A backslash outside a class.
    fn escape(&mut self, items: &mut Vec<Node>) -> Result<(), Re2Error> {
        let start = self.pos;
        match self.peek_at(1) {
            Some('A') => {
                self.pos += 2;
                items.push(Node::Assertion(r"\A"));
                return Ok(());
            }
            Some('z') => {
                self.pos += 2;
                items.push(Node::Assertion(r"\z"));
                return Ok(());
            }
            Some('b') => {
                self.pos += 2;
                items.push(Node::Assertion(r"(?-u:\b)"));
                return Ok(());
            }
            Some('B') => {
                self.pos += 2;
                items.push(Node::Assertion(r"(?-u:\B)"));
                return Ok(());
            }
            Some('C') => {
                self.pos += 2;
                return Err(Re2Error::new("invalid escape sequence", self.text(start)));
            }
            Some('Q') => {
                // Everything up to `\E` (or the end) is literal text.
                self.pos += 2;
                while self.pos < self.chars.len() && !self.rest_starts_with(r"\E") {
                    items.push(Node::Literal(self.chars[self.pos]));
                    self.pos += 1;
                }
                if self.pos < self.chars.len() {
                    self.pos += 2;
                }
                return Ok(());
            }
            _ => {}
        }
        if let Some(class) = self.unicode_class()? {
            items.push(Node::Class(class));
            return Ok(());
        }
        if let Some(class) = self.perl_class() {
            items.push(Node::Class(class.to_string()));
            return Ok(());
        }
        let c = self.escaped_char()?;
        items.push(Node::Literal(c));
        Ok(())
    }

    /// `\d`, `\s`, `\w` and their negations, ASCII as in Go.
    fn perl_class(&mut self) -> Option<&'static str> {
        if self.peek() != Some('\\') {
            return None;
        }
        let class = match self.peek_at(1)? {
            'd' => "[0-9]",
            'D' => "[^0-9]",
            's' => r"[\t\n\x0C\r ]",
            'S' => r"[^\t\n\x0C\r ]",
            'w' => "[0-9A-Za-z_]",
            'W' => "[^0-9A-Za-z_]",
            _ => return None,
        };
        self.pos += 2;
        Some(class)
    }

    /// `\pL`, `\p{Greek}`, `\P{^Greek}` with the names Go 1.19 knows (Go's
    /// `parseUnicodeClass`).
    fn unicode_class(&mut self) -> Result<Option<String>, Re2Error> {
        if self.peek() != Some('\\') || !matches!(self.peek_at(1), Some('p' | 'P')) {
            return Ok(None);
        }
        let start = self.pos;
        let mut negated = self.peek_at(1) == Some('P');
        self.pos += 2;
        let mut name: String = match self.peek() {
            Some('{') => {
                let Some(end) = self.chars[self.pos..].iter().position(|&c| c == '}') else {
                    return Err(Re2Error::new(
                        "invalid character class range",
                        self.chars[start..].iter().collect::<String>(),
                    ));
                };
                let name = self.chars[self.pos + 1..self.pos + end].iter().collect();
                self.pos += end + 1;
                name
            }
            Some(c) => {
                self.pos += 1;
                c.to_string()
            }
            None => String::new(),
        };
        if let Some(rest) = name.strip_prefix('^') {
            negated = !negated;
            name = rest.to_string();
        }
        let positive = match name.as_str() {
            "Any" => r"\x00-\x{10FFFF}".to_string(),
            // Go's `C` is Cc, Cf, Co and Cs, without the unassigned code points the
            // `regex` crate's `C` holds; surrogates never occur in a string.
            "C" => r"\p{Cc}\p{Cf}\p{Co}".to_string(),
            "Cs" => String::new(),
            _ if GO_CATEGORIES.contains(&name.as_str()) || GO_SCRIPTS.contains(&name.as_str()) => {
                format!(r"\p{{{name}}}")
            }
            _ => {
                return Err(Re2Error::new(
                    "invalid character class range",
                    self.text(start),
                ))
            }
        };
        Ok(Some(match (positive.is_empty(), negated) {
            // An empty class; the `regex` crate writes it as the complement of all.
            (true, false) => r"[^\x00-\x{10FFFF}]".to_string(),
            (true, true) => r"[\x00-\x{10FFFF}]".to_string(),
            (false, false) => format!("[{positive}]"),
            (false, true) => format!("[^{positive}]"),
        }))
    }

    /// A character escape (Go's `parseEscape`); the position is on the backslash.
    fn escaped_char(&mut self) -> Result<char, Re2Error> {
        let start = self.pos;
        self.pos += 1;
        let Some(c) = self.peek() else {
            return Err(Re2Error::new("trailing backslash at end of expression", ""));
        };
        self.pos += 1;
        let invalid =
            |parser: &Parser| Err(Re2Error::new("invalid escape sequence", parser.text(start)));
        match c {
            '1'..='7' | '0' => {
                // A single non-zero digit would be a backreference, which Go refuses.
                let is_octal = |c: Option<char>| c.is_some_and(|c| ('0'..='7').contains(&c));
                if c != '0' && !is_octal(self.peek()) {
                    return invalid(self);
                }
                let mut value = c as u32 - '0' as u32;
                for _ in 1..3 {
                    if !is_octal(self.peek()) {
                        break;
                    }
                    value = value * 8 + (self.chars[self.pos] as u32 - '0' as u32);
                    self.pos += 1;
                }
                Ok(char::from_u32(value).expect("three octal digits are a scalar value"))
            }
            'x' => {
                let hex = |c: Option<char>| c.and_then(|c| c.to_digit(16));
                if self.peek() == Some('{') {
                    self.pos += 1;
                    let mut value: u32 = 0;
                    let mut digits = 0;
                    loop {
                        match self.peek() {
                            Some('}') if digits > 0 => {
                                self.pos += 1;
                                break;
                            }
                            c => match hex(c) {
                                Some(digit) if value * 16 + digit <= 0x10FFFF => {
                                    value = value * 16 + digit;
                                    digits += 1;
                                    self.pos += 1;
                                }
                                _ => return invalid(self),
                            },
                        }
                    }
                    // A surrogate is a valid rune in Go that no string holds.
                    return char::from_u32(value).map_or_else(|| invalid(self), Ok);
                }
                let (Some(high), Some(low)) = (hex(self.peek()), hex(self.peek_at(1))) else {
                    self.pos = (self.pos + 2).min(self.chars.len());
                    return invalid(self);
                };
                self.pos += 2;
                Ok(char::from_u32(high * 16 + low).expect("two hex digits are a scalar value"))
            }
            'a' => Ok('\x07'),
            'f' => Ok('\x0C'),
            'n' => Ok('\n'),
            'r' => Ok('\r'),
            't' => Ok('\t'),
            'v' => Ok('\x0B'),
            // Any escaped ASCII punctuation (and `_`) is itself.
            c if c.is_ascii() && !c.is_ascii_alphanumeric() => Ok(c),
            _ => invalid(self),
        }
    }

    /// A bracket class, written as a `regex` class (Go's `parseClass`).
    fn class(&mut self) -> Result<String, Re2Error> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::from("[");
        if self.peek() == Some('^') {
            self.pos += 1;
            out.push('^');
        }
        let missing = |parser: &Parser| {
            Err(Re2Error::new(
                "missing closing ]",
                parser.chars[start..].iter().collect::<String>(),
            ))
        };
        let mut first = true;
        loop {
            match self.peek() {
                None => return missing(self),
                Some(']') if !first => break,
                _ => {}
            }
            first = false;
            // POSIX classes such as `[:alpha:]`; an unknown name is an error, a `[:`
            // without `:]` anywhere after it is a literal `[`.
            if self.rest_starts_with("[:") && self.chars.len() - self.pos > 2 {
                let after = self.pos + 2;
                let close = self.chars[after..]
                    .windows(2)
                    .position(|pair| pair == [':', ']']);
                if let Some(close) = close {
                    let name: String = self.chars[self.pos..after + close + 2].iter().collect();
                    let bare = name.strip_prefix("[:").unwrap_or_default();
                    let bare = bare.strip_prefix('^').unwrap_or(bare);
                    let bare = bare.strip_suffix(":]").unwrap_or_default();
                    if !POSIX_CLASSES.contains(&bare) {
                        self.pos = after + close + 2;
                        return Err(Re2Error::new("invalid character class range", name));
                    }
                    self.pos = after + close + 2;
                    // The `regex` crate's POSIX classes are Go's, name for name.
                    out.push_str(&name);
                    continue;
                }
            }
            if let Some(class) = self.unicode_class()? {
                // A nested class is a union in the `regex` crate.
                out.push_str(&class);
                continue;
            }
            if let Some(class) = self.perl_class() {
                out.push_str(class);
                continue;
            }
            let range_start = self.pos;
            let low = self.class_char(start)?;
            let mut high = low;
            if self.peek() == Some('-') && self.peek_at(1).is_some_and(|c| c != ']') {
                self.pos += 1;
                high = self.class_char(start)?;
                if high < low {
                    return Err(Re2Error::new(
                        "invalid character class range",
                        self.text(range_start),
                    ));
                }
            }
            push_class_char(&mut out, low);
            if high != low {
                out.push('-');
                push_class_char(&mut out, high);
            }
        }
        self.pos += 1;
        out.push(']');
        Ok(out)
    }

    /// One character of a class, possibly escaped (Go's `parseClassChar`).
    fn class_char(&mut self, class_start: usize) -> Result<char, Re2Error> {
        match self.peek() {
            None => Err(Re2Error::new(
                "missing closing ]",
                self.chars[class_start..].iter().collect::<String>(),
            )),
            Some('\\') => self.escaped_char(),
            Some(c) => {
                self.pos += 1;
                Ok(c)
            }
        }
    }
}

enum GroupOpening {
    /// A flag change (empty when it changes nothing, as `(?)` does).
    Flags(String),
    Group(String),
}

/// Go's `repeatIsValid`: nested counts may not multiply beyond `n`.
fn repeat_is_valid(node: &Node, mut n: i64) -> bool {
    match node {
        Node::Repeat { sub, counts, .. } => {
            if let Some((min, max)) = *counts {
                let mut m = max;
                if m == 0 {
                    return true;
                }
                if m < 0 {
                    m = min;
                }
                if m > n {
                    return false;
                }
                if m > 0 {
                    n /= m;
                }
            }
            repeat_is_valid(sub, n)
        }
        Node::Group { alternatives, .. } => alternatives
            .iter()
            .flatten()
            .all(|node| repeat_is_valid(node, n)),
        _ => true,
    }
}

/// The characters the `regex` crate treats as syntax outside a class.
fn is_meta(c: char) -> bool {
    matches!(
        c,
        '\\' | '.'
            | '+'
            | '*'
            | '?'
            | '('
            | ')'
            | '|'
            | '['
            | ']'
            | '{'
            | '}'
            | '^'
            | '$'
            | '#'
            | '&'
            | '-'
            | '~'
    )
}

fn push_literal(out: &mut String, c: char) {
    if is_meta(c) {
        out.push('\\');
    }
    out.push(c);
}

/// Inside a class every meta character is escaped too: `[`, `&&`, `--` and `~~` are
/// syntax there in the `regex` crate and plain text in Go.
fn push_class_char(out: &mut String, c: char) {
    push_literal(out, c);
}

fn emit_alternation(alternatives: &[Vec<Node>], out: &mut String) {
    for (index, items) in alternatives.iter().enumerate() {
        if index > 0 {
            out.push('|');
        }
        for item in items {
            emit(item, out);
        }
    }
}

fn emit(node: &Node, out: &mut String) {
    match node {
        Node::Literal(c) => push_literal(out, *c),
        Node::Class(class) => out.push_str(class),
        Node::Assertion(assertion) => out.push_str(assertion),
        Node::Flags(flags) => out.push_str(flags),
        Node::Group { open, alternatives } => {
            out.push_str(open);
            emit_alternation(alternatives, out);
            out.push(')');
        }
        Node::Repeat { sub, op, .. } => {
            // Only a single atom takes an operator directly; an assertion such as
            // `(?-u:\b)` or another repetition is wrapped.
            if matches!(
                **sub,
                Node::Literal(_) | Node::Class(_) | Node::Group { .. }
            ) {
                emit(sub, out);
            } else {
                out.push_str("(?:");
                emit(sub, out);
                out.push(')');
            }
            out.push_str(op);
        }
    }
}

/// The names inside `[:…:]` Go knows, each also valid negated (`[:^alpha:]`).
const POSIX_CLASSES: &[&str] = &[
    "alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print", "punct",
    "space", "upper", "word", "xdigit",
];

/// Go 1.19's `unicode.Categories`.
const GO_CATEGORIES: &[&str] = &[
    "Cc", "Cf", "Co", "L", "Ll", "Lm", "Lo", "Lt", "Lu", "M", "Mc", "Me", "Mn", "N", "Nd", "Nl",
    "No", "P", "Pc", "Pd", "Pe", "Pf", "Pi", "Po", "Ps", "S", "Sc", "Sk", "Sm", "So", "Z", "Zl",
    "Zp", "Zs",
];

/// Go 1.19's `unicode.Scripts` (Unicode 13.0).
const GO_SCRIPTS: &[&str] = &[
    "Adlam",
    "Ahom",
    "Anatolian_Hieroglyphs",
    "Arabic",
    "Armenian",
    "Avestan",
    "Balinese",
    "Bamum",
    "Bassa_Vah",
    "Batak",
    "Bengali",
    "Bhaiksuki",
    "Bopomofo",
    "Brahmi",
    "Braille",
    "Buginese",
    "Buhid",
    "Canadian_Aboriginal",
    "Carian",
    "Caucasian_Albanian",
    "Chakma",
    "Cham",
    "Cherokee",
    "Chorasmian",
    "Common",
    "Coptic",
    "Cuneiform",
    "Cypriot",
    "Cyrillic",
    "Deseret",
    "Devanagari",
    "Dives_Akuru",
    "Dogra",
    "Duployan",
    "Egyptian_Hieroglyphs",
    "Elbasan",
    "Elymaic",
    "Ethiopic",
    "Georgian",
    "Glagolitic",
    "Gothic",
    "Grantha",
    "Greek",
    "Gujarati",
    "Gunjala_Gondi",
    "Gurmukhi",
    "Han",
    "Hangul",
    "Hanifi_Rohingya",
    "Hanunoo",
    "Hatran",
    "Hebrew",
    "Hiragana",
    "Imperial_Aramaic",
    "Inherited",
    "Inscriptional_Pahlavi",
    "Inscriptional_Parthian",
    "Javanese",
    "Kaithi",
    "Kannada",
    "Katakana",
    "Kayah_Li",
    "Kharoshthi",
    "Khitan_Small_Script",
    "Khmer",
    "Khojki",
    "Khudawadi",
    "Lao",
    "Latin",
    "Lepcha",
    "Limbu",
    "Linear_A",
    "Linear_B",
    "Lisu",
    "Lycian",
    "Lydian",
    "Mahajani",
    "Makasar",
    "Malayalam",
    "Mandaic",
    "Manichaean",
    "Marchen",
    "Masaram_Gondi",
    "Medefaidrin",
    "Meetei_Mayek",
    "Mende_Kikakui",
    "Meroitic_Cursive",
    "Meroitic_Hieroglyphs",
    "Miao",
    "Modi",
    "Mongolian",
    "Mro",
    "Multani",
    "Myanmar",
    "Nabataean",
    "Nandinagari",
    "New_Tai_Lue",
    "Newa",
    "Nko",
    "Nushu",
    "Nyiakeng_Puachue_Hmong",
    "Ogham",
    "Ol_Chiki",
    "Old_Hungarian",
    "Old_Italic",
    "Old_North_Arabian",
    "Old_Permic",
    "Old_Persian",
    "Old_Sogdian",
    "Old_South_Arabian",
    "Old_Turkic",
    "Oriya",
    "Osage",
    "Osmanya",
    "Pahawh_Hmong",
    "Palmyrene",
    "Pau_Cin_Hau",
    "Phags_Pa",
    "Phoenician",
    "Psalter_Pahlavi",
    "Rejang",
    "Runic",
    "Samaritan",
    "Saurashtra",
    "Sharada",
    "Shavian",
    "Siddham",
    "SignWriting",
    "Sinhala",
    "Sogdian",
    "Sora_Sompeng",
    "Soyombo",
    "Sundanese",
    "Syloti_Nagri",
    "Syriac",
    "Tagalog",
    "Tagbanwa",
    "Tai_Le",
    "Tai_Tham",
    "Tai_Viet",
    "Takri",
    "Tamil",
    "Tangut",
    "Telugu",
    "Thaana",
    "Thai",
    "Tibetan",
    "Tifinagh",
    "Tirhuta",
    "Ugaritic",
    "Vai",
    "Wancho",
    "Warang_Citi",
    "Yezidi",
    "Yi",
    "Zanabazar_Square",
];

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
