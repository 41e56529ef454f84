//! Bounds on a statement's shape, checked on its tokens before it is parsed.
//!
//! sqlparser builds a chain of binary operators (`a OR b OR c …`, `x + y + z …`), of set
//! operations (`… UNION …`) and of joins in a loop, so parsing never runs out of stack;
//! but the tree it builds is as deep as the chain is long, and everything after the
//! parser recurses over that tree: dropping it, DataFusion's planner, its analyzer and
//! optimizer rules, and the physical plan. A chain of ten thousand `OR` terms overflowed
//! the stack of the frontend's worker thread and took the whole process down. So a
//! statement whose expressions may chain more than [`CHAIN_MAX`] operators is refused
//! before it is parsed, with an error that names the limit.
//!
//! Everything else that nests (parentheses, function calls, `CASE`, `NOT`, subqueries)
//! goes through sqlparser's recursive descent, which refuses to nest deeper than its
//! recursion limit (50), so the tree's depth is bounded by that limit and this one.

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use super::SqlError;

/// How many operators one expression (and the set operations and joins around it) may
/// chain. The count is generous (every operator symbol and operator word counts, even
/// where it does not deepen the tree), so an `OR` chain of comparisons may hold about
/// half as many terms. Measured on a debug build (the tests') with the frontend's 8 MiB
/// worker stacks: a `WHERE` of 1,600 `OR` terms (a tree 1,600 deep) is answered, one of
/// 2,000 overflows the stack; release builds have room to spare. 1,000 keeps well clear.
pub const CHAIN_MAX: usize = 1_000;

/// The operator count of one parenthesis level.
#[derive(Default)]
struct Level {
    /// Operators since the last comma or `CASE` branch at this level: they may chain
    /// into one expression.
    expression: usize,
    /// Set operations, joins and comma-separated `FROM` items at this level: the plan
    /// chains these whatever commas separate them.
    relations: usize,
    /// Inside a `FROM` list, where a comma is a join.
    in_from: bool,
}

impl Level {
    fn total(&self) -> usize {
        self.expression + self.relations
    }
}

/// Refuses `sql` if one of its statements may chain more than [`CHAIN_MAX`] operators.
/// Tokens that do not tokenize are left for the parser to report.
pub fn check(sql: &str) -> Result<(), SqlError> {
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
        return Ok(());
    };
    // One entry per open parenthesis or bracket, the statement's own level first. The
    // depth of the tree built so far is at most the sum over the open levels.
    let mut levels = vec![Level::default()];
    let mut open = 0usize;
    for token in &tokens {
        let top = levels.len() - 1;
        match token {
            Token::LParen | Token::LBracket | Token::LBrace => {
                levels.push(Level::default());
                continue;
            }
            Token::RParen | Token::RBracket | Token::RBrace => {
                if levels.len() > 1 {
                    let closed = levels.pop().map_or(0, |level| level.total());
                    open -= closed;
                }
                continue;
            }
            Token::SemiColon => {
                levels.truncate(1);
                levels[0] = Level::default();
                open = 0;
                continue;
            }
            Token::Comma => {
                let level = &mut levels[top];
                open -= level.expression;
                level.expression = 0;
                if level.in_from {
                    level.relations += 1;
                    open += 1;
                }
            }
            Token::Word(word) if word.quote_style.is_none() => match word.keyword {
                Keyword::AND
                | Keyword::OR
                | Keyword::NOT
                | Keyword::IS
                | Keyword::IN
                | Keyword::BETWEEN
                | Keyword::LIKE
                | Keyword::ILIKE
                | Keyword::SIMILAR
                | Keyword::COLLATE
                | Keyword::AT
                | Keyword::OVERLAPS => {
                    levels[top].expression += 1;
                    open += 1;
                }
                Keyword::UNION | Keyword::EXCEPT | Keyword::INTERSECT | Keyword::JOIN => {
                    let level = &mut levels[top];
                    level.relations += 1;
                    level.in_from &= word.keyword == Keyword::JOIN;
                    open += 1;
                }
                Keyword::WHEN | Keyword::THEN | Keyword::ELSE => {
                    // `CASE` keeps its branches in a list: each is an expression of
                    // its own.
                    let level = &mut levels[top];
                    open -= level.expression;
                    level.expression = 0;
                }
                Keyword::FROM => levels[top].in_from = true,
                Keyword::SELECT
                | Keyword::WHERE
                | Keyword::GROUP
                | Keyword::HAVING
                | Keyword::ORDER
                | Keyword::LIMIT
                | Keyword::OFFSET
                | Keyword::WINDOW
                | Keyword::QUALIFY => levels[top].in_from = false,
                _ => {}
            },
            Token::Word(_)
            | Token::Number(..)
            | Token::Placeholder(_)
            | Token::Whitespace(_)
            | Token::Period
            | Token::EOF
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedByteStringLiteral(_)
            | Token::TripleDoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedRawStringLiteral(_)
            | Token::DoubleQuotedRawStringLiteral(_)
            | Token::TripleSingleQuotedRawStringLiteral(_)
            | Token::TripleDoubleQuotedRawStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::QuoteDelimitedStringLiteral(_)
            | Token::NationalQuoteDelimitedStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_) => {}
            // Every other token is an operator symbol: `+`, `=`, `::`, `||`, `->`, ….
            _ => {
                levels[top].expression += 1;
                open += 1;
            }
        }
        if open > CHAIN_MAX {
            return Err(SqlError::Invalid(format!(
                "the statement chains more than {CHAIN_MAX} operators in one expression \
                 (or set operations and joins in one query), the limit; write a long list \
                 of alternatives as `column IN (…)`, or split the statement"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(terms: usize, operator: &str) -> String {
        let terms: Vec<String> = (0..terms).map(|i| format!("x = {i}")).collect();
        format!("SELECT * FROM t WHERE {}", terms.join(operator))
    }

    #[test]
    fn long_chains_are_refused_and_lists_are_not() {
        // `x = 0 OR x = 1 …` counts two operators a term.
        assert!(check(&chain(CHAIN_MAX / 2 - 1, " OR ")).is_ok());
        let error = check(&chain(10_000, " OR ")).unwrap_err().to_string();
        assert!(error.contains(&CHAIN_MAX.to_string()), "{error}");
        assert!(check(&chain(CHAIN_MAX, " + ")).is_err());
        // Parentheses do not hide a chain: the levels add up…
        let terms = |n: usize| {
            (0..n)
                .map(|i| format!("x = {i}"))
                .collect::<Vec<_>>()
                .join(" AND ")
        };
        let nested = format!("SELECT 1 WHERE {} AND ({})", terms(300), terms(300));
        assert!(check(&nested).is_err());
        // …but siblings in parentheses are as deep as the deeper of them.
        let siblings = format!("SELECT 1 WHERE ({}) OR ({})", terms(300), terms(300));
        assert!(check(&siblings).is_ok());
        // Lists are flat: commas end an expression.
        let values: Vec<String> = (0..50_000).map(|i| format!("({i}, -{i}.5)")).collect();
        let insert = format!("INSERT INTO t VALUES {}", values.join(", "));
        assert!(check(&insert).is_ok());
        let list: Vec<String> = (0..50_000).map(|i| i.to_string()).collect();
        assert!(check(&format!("SELECT * FROM t WHERE x IN ({})", list.join(", "))).is_ok());
        let case: Vec<String> = (0..5_000)
            .map(|i| format!("WHEN x = {i} THEN {i}"))
            .collect();
        assert!(check(&format!("SELECT CASE {} END FROM t", case.join(" "))).is_ok());
        // Each statement counts on its own.
        let many = vec![chain(CHAIN_MAX / 4, " OR "); 10].join("; ");
        assert!(check(&many).is_ok());
    }

    #[test]
    fn set_operations_and_joins_chain_across_commas() {
        let unions = vec!["SELECT a, b FROM t"; CHAIN_MAX + 2].join(" UNION ALL ");
        assert!(check(&unions).is_err());
        let tables: Vec<String> = (0..CHAIN_MAX + 2).map(|i| format!("t{i}")).collect();
        assert!(check(&format!("SELECT 1 FROM {}", tables.join(", "))).is_err());
        assert!(check("SELECT a, b, c FROM x, y WHERE a = 1").is_ok());
    }
}
