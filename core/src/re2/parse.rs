//! Parsing a pattern as Go's `regexp/syntax` does: the parser and the nodes it builds.

use super::*;

/// Go's limit on repetition counts, and on their product when repetitions nest.
pub(super) const MAX_REPEAT: i64 = 1000;
/// Go's limit on nesting depth (`maxHeight`).
pub(super) const MAX_NESTING: usize = 1000;

/// One element of a concatenation, already in the `regex` crate's terms where that is
/// a plain string.
#[derive(Debug)]
pub(super) enum Node {
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

pub(super) struct Parser {
    pub(super) chars: Vec<char>,
    pub(super) pos: usize,
    /// The capture names seen so far.
    pub(super) names: Vec<String>,
}

impl Parser {
    pub(super) fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    pub(super) fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    /// The source text from `from` to the current position, for error messages.
    pub(super) fn text(&self, from: usize) -> String {
        self.chars[from..self.pos.min(self.chars.len())]
            .iter()
            .collect()
    }

    pub(super) fn rest_starts_with(&self, prefix: &str) -> bool {
        prefix
            .chars()
            .enumerate()
            .all(|(i, c)| self.chars.get(self.pos + i) == Some(&c))
    }

    /// Alternatives up to a `)` or the end; `depth` counts the enclosing groups.
    pub(super) fn alternation(&mut self, depth: usize) -> Result<Vec<Vec<Node>>, Re2Error> {
        let mut alternatives = vec![self.concatenation(depth)?];
        while self.peek() == Some('|') {
            self.pos += 1;
            alternatives.push(self.concatenation(depth)?);
        }
        Ok(alternatives)
    }

    pub(super) fn concatenation(&mut self, depth: usize) -> Result<Vec<Node>, Re2Error> {
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
    pub(super) fn repeat(
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
    pub(super) fn repeat_counts(&mut self) -> Option<(i64, i64)> {
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
    pub(super) fn integer(&mut self) -> Option<i64> {
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
    pub(super) fn group_opening(&mut self) -> Result<GroupOpening, Re2Error> {
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
    pub(super) fn escape(&mut self, items: &mut Vec<Node>) -> Result<(), Re2Error> {
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
    pub(super) fn perl_class(&mut self) -> Option<&'static str> {
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
    pub(super) fn unicode_class(&mut self) -> Result<Option<String>, Re2Error> {
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
    pub(super) fn escaped_char(&mut self) -> Result<char, Re2Error> {
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
    pub(super) fn class(&mut self) -> Result<String, Re2Error> {
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
    pub(super) fn class_char(&mut self, class_start: usize) -> Result<char, Re2Error> {
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

pub(super) enum GroupOpening {
    /// A flag change (empty when it changes nothing, as `(?)` does).
    Flags(String),
    Group(String),
}

/// Go's `repeatIsValid`: nested counts may not multiply beyond `n`.
pub(super) fn repeat_is_valid(node: &Node, mut n: i64) -> bool {
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
pub(super) fn is_meta(c: char) -> bool {
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
