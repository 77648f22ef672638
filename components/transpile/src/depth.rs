//! A bound on how deeply a source nests, checked before swc sees it.
//!
//! swc's parser and passes recurse once or more per level of the syntax
//! tree, and in wasm32 there is no `stacker` to grow the stack: a source
//! nested deeper than the stack allows traps the instance ("call stack
//! exhausted", a 500). So the source is scanned first, in one pass over its
//! bytes, for what makes the tree deep: brackets (`(`, `[`, `{`, `${`), JSX
//! elements, arrow functions, statements nested without brackets (`if (a)
//! if (b) …`, `for (;;) for (;;) …`, `else if` chains, `class extends class
//! extends …`), and chains of operators, member accesses and unary
//! keywords within one expression (`a + b + …`, `a.b.c…`, `!!!…`, `typeof
//! typeof …`). Each costs units, about in proportion to the stack swc
//! spends on it (measured in the component: a bracket, a JSX element or an
//! arrow 1.3–1.7 KiB of wasm stack, an operator or a `.` 0.3–0.45 KiB; a
//! nesting statement is counted as a bracket), and the costs along the way
//! from the top of the source to the deepest point are summed; a statement
//! that a `}` ends and another begins after starts again from its level.
//! Strings, comments and templates are skipped by the usual heuristics,
//! and so are regular expressions but for their groups, which count as
//! brackets: a `/` the scan takes for the start of one may be a division
//! (`{} / ((( … ))) / 1` went through swc's stack while the scan skipped
//! it, in the hostile probe). Where the heuristics guess wrong they count
//! too much, and the limit is far above what code is written with.
//!
//! `MAX_NESTING` (units, default [`MAX_UNITS`]) moves the limit. With the
//! engine's 8 MiB of wasm stack and this component's 16 MiB shadow stack
//! (`build.rs`) it took 5,695 nested brackets, 5,788 nested JSX elements,
//! 4,806 nested arrows, 24,954 chained `+`, 19,408 chained `.` and 20,961
//! `!` (measured one at a time over HTTP); the default stops at 1,000
//! brackets, elements, arrows or nested statements, or 4,000 operators.

use crate::compile::{Diagnostic, line_and_column};

/// The deepest source accepted, in units (a bracket is [`LEVEL`] units, an
/// operator one).
pub const MAX_UNITS: usize = 4000;

/// The units of a bracket, a JSX element or an arrow function.
const LEVEL: usize = 4;

fn max_units() -> usize {
    crate::number_setting("MAX_NESTING", MAX_UNITS)
}

/// `Err` with where the source first nests deeper than the limit.
pub fn check(name: &str, source: &str) -> Result<(), Vec<Diagnostic>> {
    let max = max_units();
    let Some(at) = too_deep(source.as_bytes(), max) else {
        return Ok(());
    };
    let (line, column) = line_and_column(source, at);
    Err(vec![Diagnostic {
        file: name.to_string(),
        line,
        column,
        message: format!(
            "the source nests too deeply here (over {max} units: a bracket, JSX element or arrow \
             function counts {LEVEL}, an operator in one expression 1)"
        ),
    }])
}

/// Where a bracket of the scan was opened.
#[derive(Clone, Copy, PartialEq)]
enum Open {
    Bracket,
    /// `${` in a template: its `}` goes back into the template.
    Template,
    Jsx,
}

struct Scan {
    /// What is open, each with the units spent in it so far.
    open: Vec<(Open, usize)>,
    /// The units at the current level.
    here: usize,
    /// The sum over `open` and `here`.
    total: usize,
}

impl Scan {
    fn push(&mut self, kind: Open) {
        self.open.push((kind, self.here));
        self.here = 0;
        self.total += LEVEL;
    }

    fn pop(&mut self) -> Option<Open> {
        let (kind, outer) = self.open.pop()?;
        self.total -= self.here + LEVEL;
        self.here = outer;
        Some(kind)
    }

    fn add(&mut self, units: usize) {
        self.here += units;
        self.total += units;
    }

    /// `;` or `,`: the expression ends.
    fn end_expression(&mut self) {
        self.total -= self.here;
        self.here = 0;
    }
}

/// Bytes after which `/` starts a regular expression and `<` JSX, not a
/// division or a comparison.
fn expression_starts_after(b: u8) -> bool {
    b"(,=:[!&|?{};>".contains(&b)
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Operators: a run of them (`===`, `&&`) counts once, except the unary
/// ones and `.`, which nest each time (`!!!a`, `a.b.c`). A table: the scan
/// looks every byte up.
const OPERATOR: [bool; 256] = {
    let mut table = [false; 256];
    let operators = b"+-*/%&|^<>?:=!~.";
    let mut i = 0;
    while i < operators.len() {
        table[operators[i] as usize] = true;
        i += 1;
    }
    table
};

/// Words that nest what follows them.
fn is_unary_word(word: &[u8]) -> bool {
    matches!(
        word,
        b"typeof" | b"void" | b"await" | b"new" | b"delete" | b"yield"
    )
}

/// Words that open a statement or class nested in what follows them
/// (`if (a) if (b) …`, `for (;;) for (;;) …`, `else if` chains, `class A
/// extends class B extends …`): each is a level of swc's recursion, as a
/// bracket is, though no bracket is opened.
fn is_nesting_word(word: &[u8]) -> bool {
    matches!(
        word,
        b"if" | b"for" | b"while" | b"do" | b"with" | b"extends"
    )
}

/// Words that go on with the statement a `}` closed (`} else`, `} catch`,
/// `} while (…)`, `{} instanceof C`, ...); any other word after a `}`
/// starts a new statement, where nothing before it nests.
fn continues_after_block(word: &[u8]) -> bool {
    matches!(
        word,
        b"else"
            | b"catch"
            | b"finally"
            | b"while"
            | b"in"
            | b"instanceof"
            | b"as"
            | b"satisfies"
            | b"of"
    )
}

/// The byte offset where the scan's units first pass `max`, if they do.
fn too_deep(bytes: &[u8], max: usize) -> Option<usize> {
    let mut scan = Scan {
        open: Vec::new(),
        here: 0,
        total: 0,
    };
    // The last byte that is not whitespace, and the last whole word.
    let mut last = b';';
    let mut last_word: &[u8] = b"";
    // Inside a JSX tag (`<div a="1">`): its `=` and `>` are no operators.
    let mut in_tag = false;
    // The last thing read was a `}` closing a bracket: a word now may start
    // a new statement.
    let mut after_block = false;
    let mut i = 0;
    let at = |i: usize| bytes.get(i).copied().unwrap_or(b'\n');
    while i < bytes.len() {
        let b = bytes[i];
        if is_word(b) {
            // A whole word at once: most of a source is words.
            let start = i;
            while i < bytes.len() && is_word(bytes[i]) {
                i += 1;
            }
            last_word = &bytes[start..i];
            last = bytes[i - 1];
            if std::mem::take(&mut after_block) && !continues_after_block(last_word) {
                scan.end_expression();
            }
            if is_unary_word(last_word) {
                scan.add(1);
            } else if is_nesting_word(last_word) {
                scan.add(LEVEL);
            }
            if scan.total > max {
                return Some(start);
            }
            continue;
        }
        if b.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let mut closed_block = false;
        let starts_expression = || {
            expression_starts_after(last)
                || (is_word(last)
                    && matches!(
                        last_word,
                        b"return" | b"yield" | b"await" | b"typeof" | b"void" | b"case"
                    ))
        };
        match b {
            b'/' if at(i + 1) == b'/' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if at(i + 1) == b'*' => {
                i += 2;
                while i < bytes.len() && !(bytes[i] == b'*' && at(i + 1) == b'/') {
                    i += 1;
                }
                i += 2;
                continue;
            }
            b'/' if at(i + 1) == b'>' => {
                // `/>` closes a JSX element.
                if scan.open.last().is_some_and(|(k, _)| *k == Open::Jsx) {
                    scan.pop();
                }
                in_tag = false;
                i += 1;
            }
            b'/' if starts_expression() => {
                // A regular expression, to its unescaped `/` outside a class.
                // Its groups and quantifiers count as brackets: a regular
                // expression's are few and balanced, and where the guess is
                // wrong (`{} / ((( … ))) / 1` is a division) they are the
                // brackets of the code.
                let start = i;
                let mut class = false;
                let (mut depth, mut deepest) = (0usize, 0usize);
                i += 1;
                while i < bytes.len() && bytes[i] != b'\n' {
                    match bytes[i] {
                        b'\\' => i += 1,
                        b'[' if !class => {
                            class = true;
                            depth += 1;
                            deepest = deepest.max(depth);
                        }
                        b']' if class => {
                            class = false;
                            depth = depth.saturating_sub(1);
                        }
                        b'(' | b'{' if !class => {
                            depth += 1;
                            deepest = deepest.max(depth);
                        }
                        b')' | b'}' if !class => depth = depth.saturating_sub(1),
                        b'/' if !class => break,
                        _ => {}
                    }
                    i += 1;
                }
                if scan.total + deepest * LEVEL > max {
                    return Some(start + 1);
                }
            }
            // A quote right after a letter is an apostrophe in JSX text.
            b'\'' | b'"' if !is_word(last) => {
                i += 1;
                while i < bytes.len() && bytes[i] != b && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'`' => i = template(bytes, i + 1, &mut scan),
            b'}' if scan.open.last().is_some_and(|(k, _)| *k == Open::Template) => {
                scan.pop();
                i = template(bytes, i + 1, &mut scan);
            }
            b'(' | b'[' | b'{' => scan.push(Open::Bracket),
            b')' | b']' | b'}' => {
                // JSX elements left open inside the bracket close with it.
                while scan.pop() == Some(Open::Jsx) {}
                if b == b'}' {
                    // Set after `last` below.
                    closed_block = true;
                }
            }
            b'<' if at(i + 1) == b'/' => {
                if scan.open.last().is_some_and(|(k, _)| *k == Open::Jsx) {
                    scan.pop();
                }
                i += 1;
            }
            b'<' if starts_expression()
                && (at(i + 1).is_ascii_alphabetic() || at(i + 1) == b'>') =>
            {
                scan.push(Open::Jsx);
                in_tag = true;
            }
            b'>' | b'=' if in_tag && scan.open.last().is_some_and(|(k, _)| *k == Open::Jsx) => {
                in_tag = b == b'=';
            }
            b';' | b',' => scan.end_expression(),
            b'=' if at(i + 1) == b'>' => {
                scan.add(LEVEL);
                i += 1;
            }
            b if OPERATOR[b as usize] => {
                let continues_run = i > 0 && OPERATOR[bytes[i - 1] as usize];
                if !continues_run || b"!~+-.".contains(&b) {
                    scan.add(1);
                }
            }
            _ => {}
        }
        if scan.total > max {
            return Some(i.min(bytes.len() - 1));
        }
        if i < bytes.len() && !bytes[i].is_ascii_whitespace() {
            last = bytes[i];
            after_block = std::mem::take(&mut closed_block);
        }
        i += 1;
    }
    None
}

/// Skips a template's text from `i` to its closing backtick (returning the
/// index after it) or to a `${` (opening it in `scan`, returning the index
/// after it).
fn template(bytes: &[u8], mut i: usize, scan: &mut Scan) -> usize {
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'`' => return i,
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                scan.push(Open::Template);
                return i + 1;
            }
            _ => i += 1,
        }
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(source: &str) -> usize {
        // The smallest limit the source passes.
        let (mut lo, mut hi) = (0, 100_000);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if too_deep(source.as_bytes(), mid).is_none() {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo
    }

    #[test]
    fn brackets_jsx_and_arrows_count_four_operators_one() {
        assert_eq!(
            units(&format!("x = {}1{}", "(".repeat(10), ")".repeat(10))),
            41
        );
        let elements = "<div>".repeat(10) + &"</div>".repeat(10);
        assert_eq!(units(&format!("x = {elements}")), 41);
        let attributes = "<div a=\"1\" b={c > d}>".repeat(10) + &"</div>".repeat(10);
        assert_eq!(units(&format!("x = {attributes}")), 41 + 4 + 1);
        assert_eq!(units(&format!("x = {}", "<br/>".repeat(100))), 5);
        assert_eq!(units(&format!("x = {}1", "() => ".repeat(10))), 41);
        assert_eq!(units(&format!("x = 1{}", " + 1".repeat(100))), 101);
        assert_eq!(units(&format!("x = a{}", ".b".repeat(100))), 101);
        assert_eq!(units(&format!("x = {}a", "!".repeat(100))), 101);
        assert_eq!(units(&format!("x = {}a", "typeof ".repeat(100))), 101);
    }

    #[test]
    fn expressions_end_at_commas_and_semicolons() {
        let statements = "a = b + c;\n".repeat(10_000);
        assert!(units(&statements) <= 3);
        let array = format!("x = [{}]", "1 + 1, ".repeat(10_000));
        assert!(units(&array) <= 8);
    }

    #[test]
    fn strings_comments_regexes_and_templates_do_not_count() {
        let quiet = [
            "x = '((((((((((((((((';",
            "x = \"[[[[[[[[[[[[[[[[[[\";",
            "// ((((((((((((((((((((\nx = 1;",
            "/* {{{{{{{{{{{{{{{{{{{{ */ x = 1;",
            "x = /\\(+[(]+/g;",
            "x = `((((((((((((((((((`;",
            "x = <p>It's \"quoted\" and fine</p>;",
            "x = a === b && c !== d || e >= f;",
        ];
        for source in quiet {
            assert!(units(source) <= 14, "{source}: {}", units(source));
        }
        let nested = format!("x = `{}`", "${`".repeat(10) + &"`}".repeat(10));
        assert_eq!(units(&nested), 41);
    }

    #[test]
    fn a_division_taken_for_a_regular_expression_still_counts_its_brackets() {
        // The hostile probe's: `/` after `}` reads as a regular expression.
        let division = format!(
            "export const x = {{}} / {}1{} / 1;",
            "(".repeat(100),
            ")".repeat(100)
        );
        assert!(units(&division) >= 400, "{}", units(&division));
        // A real one's groups are few.
        assert!(units("x = /(a(b)c)+[(]{2,3}/g;") <= 16);
    }

    #[test]
    fn nested_statements_count_as_levels_and_sequences_do_not() {
        let level = |source: &str| units(source) / LEVEL;
        let nested_ifs = format!("{}x();", "if (a) ".repeat(100));
        assert_eq!(level(&nested_ifs), 101);
        let nested_fors = format!("{}x();", "for (;;) ".repeat(100));
        assert_eq!(level(&nested_fors), 101);
        let chain = format!("if (a) {{}}{}", " else if (a) {}".repeat(100));
        assert_eq!(level(&chain), 102);
        let classes = format!(
            "x = {}{{}}{};",
            "class extends ".repeat(100),
            " {}".repeat(100)
        );
        assert!(units(&classes) >= 400, "{}", units(&classes));
        // One after another, each in its block: no deeper than one.
        for sequence in [
            "if (a) { b(); }\n".repeat(10_000),
            "for (const x of y) { z(x) }\n".repeat(10_000),
            "if (a) { b() } else { c() }\nwhile (d) { e() }\n".repeat(5_000),
            "function f() {}\nclass C extends D {}\n".repeat(10_000),
            "try { a() } catch (e) { b() } finally { c() }\ndo { d() } while (e)\n".repeat(5_000),
        ] {
            assert!(
                units(&sequence) <= 20,
                "{}: {}",
                &sequence[..40],
                units(&sequence)
            );
        }
    }

    #[test]
    fn generics_and_comparisons_are_not_jsx() {
        let ts =
            "let a: Promise<Array<Map<string, Set<number>>>> = f<T>(b < c, d<e);\n".repeat(1000);
        assert!(units(&ts) < 40, "{}", units(&ts));
    }
}
