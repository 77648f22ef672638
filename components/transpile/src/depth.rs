//! A bound on how deeply a source nests, checked before swc sees it.
//!
//! swc's parser and passes recurse once (or more) per level of nesting,
//! and in wasm32 there is no `stacker` to grow the stack: a source nested
//! deeper than the stack allows would trap the instance (a 500). So the
//! source is scanned first, in one pass over its bytes, for the two ways
//! real code nests: brackets (`(`, `[`, `{`, `${`) and JSX elements (a `<`
//! after a place where an expression starts, closed by `</` or `/>`). The
//! scan does not know strings, comments or regular expressions, so it can
//! count more than the parser would, never less for these two kinds; the
//! limit is far above what code is written with and far below what the
//! component's stack takes (`build.rs` sets the stack; the tests push it).

use crate::compile::{Diagnostic, line_and_column};

/// The deepest nesting accepted.
pub const MAX_DEPTH: usize = 1000;

/// `Err` with where the source first nests deeper than [`MAX_DEPTH`].
pub fn check(name: &str, source: &str) -> Result<(), Vec<Diagnostic>> {
    let Some(at) = too_deep(source.as_bytes(), MAX_DEPTH) else {
        return Ok(());
    };
    let (line, column) = line_and_column(source, at);
    Err(vec![Diagnostic {
        file: name.to_string(),
        line,
        column,
        message: format!("the source nests deeper than {MAX_DEPTH} levels"),
    }])
}

/// The byte offset where nesting first passes `max`, if it does.
fn too_deep(bytes: &[u8], max: usize) -> Option<usize> {
    let mut depth = 0usize;
    // The last byte that is not whitespace: a `<` after one of these
    // starts JSX (`(<div>`, `= <A/>`, `return <p>`, `{<b>}`, `><i>`).
    let mut last = b';';
    for (i, &b) in bytes.iter().enumerate() {
        let opens = match b {
            b'(' | b'[' | b'{' => true,
            b'<' => {
                let next = bytes.get(i + 1).copied().unwrap_or(b' ');
                let starts_jsx = matches!(
                    last,
                    b'(' | b','
                        | b'='
                        | b'?'
                        | b':'
                        | b'{'
                        | b'}'
                        | b'>'
                        | b';'
                        | b'['
                        | b'&'
                        | b'|'
                        | b'n'
                ) && (next.is_ascii_alphabetic() || next == b'>');
                if next == b'/' {
                    depth = depth.saturating_sub(1);
                }
                starts_jsx
            }
            b')' | b']' | b'}' => {
                depth = depth.saturating_sub(1);
                false
            }
            b'/' if bytes.get(i + 1) == Some(&b'>') => {
                depth = depth.saturating_sub(1);
                false
            }
            _ => false,
        };
        if opens {
            depth += 1;
            if depth > max {
                return Some(i);
            }
        }
        if !b.is_ascii_whitespace() {
            last = b;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brackets_and_jsx_count_comparisons_and_generics_do_not() {
        let deep = |n: usize| format!("x = {}1{}", "(".repeat(n), ")".repeat(n));
        assert_eq!(too_deep(deep(10).as_bytes(), 10), None);
        assert_eq!(too_deep(deep(11).as_bytes(), 10), Some(14));
        let jsx = |n: usize| format!("x = {}{}", "<div>".repeat(n), "</div>".repeat(n));
        assert_eq!(too_deep(jsx(10).as_bytes(), 10), None);
        assert!(too_deep(jsx(11).as_bytes(), 10).is_some());
        let selfclosing = "x = <div>".to_string() + &"<br/>".repeat(100) + "</div>";
        assert_eq!(too_deep(selfclosing.as_bytes(), 2), None);
        let generics =
            "let a: Promise<Array<Map<string, Set<number>>>> = f<T>(b < c, d<e);\n".repeat(100);
        assert_eq!(too_deep(generics.as_bytes(), 3), None);
    }

    #[test]
    fn the_place_is_a_line_and_a_column() {
        assert_eq!(line_and_column("ab\ncdé(", 7), (2, 4));
    }
}
