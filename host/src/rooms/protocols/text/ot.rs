//! The `text` protocol's document: a string edited by position, with
//! concurrent edits transformed against each other (operational
//! transformation with a central order, as in Jupiter / ot.js: the room's
//! owner is the server that orders every edit).
//!
//! A client sends an edit made against the document at the last `seq` it
//! had seen; the owner transforms it past every edit ordered after that
//! `seq`, applies it and gives it the next number. Every client applies the
//! owner's edits in order, so all converge on the owner's text.
//!
//! Positions and lengths count UTF-16 code units, as JavaScript strings
//! (the editors' language) index them; an edit that would split a
//! surrogate pair is refused.

use std::collections::VecDeque;

/// The longest text a room holds, in UTF-16 code units (16 MiB of them):
/// every edit is applied in memory and the whole text is a snapshot.
pub const MAX_TEXT_UNITS: usize = 8 << 20;

/// One step of an edit. An edit is a list of steps applied in order: a
/// client's `replace` is a delete then an insert, and transforming an edit
/// can split a delete around a concurrent insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Insert { at: usize, text: Vec<u16> },
    Delete { at: usize, len: usize },
}

/// Why an edit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("position {at} is past the end of the text ({len})")]
    OutOfRange { at: usize, len: usize },
    #[error("position {at} splits a character (a UTF-16 surrogate pair)")]
    SplitsCharacter { at: usize },
    #[error("the text would be {len} UTF-16 units, over the room's limit of {max}")]
    TooLong { len: usize, max: usize },
    #[error("seq {seq} is ahead of the room ({head})")]
    FromTheFuture { seq: u64, head: u64 },
    #[error(
        "seq {seq} is older than the edits this room keeps (from {oldest}): load the text again"
    )]
    Stale { seq: u64, oldest: u64 },
}

/// `a` and `b` made against the same text: `a` made to apply after `b`,
/// and `b` made to apply after `a`, so that both orders give one text. At
/// the same position `b`'s insert goes first (the owner ordered it first).
pub fn transform(a: &[Step], b: &[Step]) -> (Vec<Step>, Vec<Step>) {
    match (a, b) {
        ([], _) => (Vec::new(), b.to_vec()),
        (_, []) => (a.to_vec(), Vec::new()),
        ([a], [b]) => transform_steps(a, b),
        ([first, rest @ ..], _) if !rest.is_empty() => {
            let (first_after, b_after_first) = transform(std::slice::from_ref(first), b);
            let (rest_after, b_after_all) = transform(rest, &b_after_first);
            ([first_after, rest_after].concat(), b_after_all)
        }
        (_, [first, rest @ ..]) => {
            let (a_after_first, first_after) = transform(a, std::slice::from_ref(first));
            let (a_after_all, rest_after) = transform(&a_after_first, rest);
            (a_after_all, [first_after, rest_after].concat())
        }
    }
}

fn transform_steps(a: &Step, b: &Step) -> (Vec<Step>, Vec<Step>) {
    use Step::{Delete, Insert};
    match (a, b) {
        (Insert { at: p, text: s }, Insert { at: q, text: t }) => {
            if q <= p {
                (vec![insert(p + t.len(), s)], vec![b.clone()])
            } else {
                (vec![a.clone()], vec![insert(q + s.len(), t)])
            }
        }
        (Insert { at: p, text: s }, Delete { at: q, len: n }) => {
            let (p, q, n) = (*p, *q, *n);
            if p <= q {
                (
                    vec![a.clone()],
                    delete(q + s.len(), n).into_iter().collect(),
                )
            } else if p >= q + n {
                (vec![insert(p - n, s)], vec![b.clone()])
            } else {
                // Inserted inside the deleted range: the insert survives,
                // the delete goes around it.
                let around = [delete(q, p - q), delete(q + s.len(), q + n - p)];
                (vec![insert(q, s)], around.into_iter().flatten().collect())
            }
        }
        (Delete { .. }, Insert { .. }) => {
            let (b_after, a_after) = transform_steps(b, a);
            (a_after, b_after)
        }
        (Delete { at: p, len: n }, Delete { at: q, len: m }) => {
            let (p, n, q, m) = (*p, *n, *q, *m);
            let overlap = (p + n).min(q + m).saturating_sub(p.max(q));
            let shift = |x: usize, y: usize, len_y: usize| {
                if x < y {
                    x
                } else if x < y + len_y {
                    y
                } else {
                    x - len_y
                }
            };
            let a_after = delete(shift(p, q, m), n - overlap);
            let b_after = delete(shift(q, p, n), m - overlap);
            (a_after.into_iter().collect(), b_after.into_iter().collect())
        }
    }
}

/// Applies one step to `text` if it fits: in range, and cutting no
/// surrogate pair.
fn apply_step(text: &mut Vec<u16>, step: &Step) -> Result<(), EditError> {
    let splits_pair = |at: usize| {
        at > 0
            && at < text.len()
            && (0xDC00..0xE000).contains(&text[at])
            && (0xD800..0xDC00).contains(&text[at - 1])
    };
    let (at, end) = match step {
        Step::Insert { at, .. } => (*at, *at),
        Step::Delete { at, len } => (*at, at.saturating_add(*len)),
    };
    if end > text.len() {
        let len = text.len();
        return Err(EditError::OutOfRange { at: end, len });
    }
    if let Some(cut) = [at, end].into_iter().find(|&cut| splits_pair(cut)) {
        return Err(EditError::SplitsCharacter { at: cut });
    }
    match step {
        Step::Insert { at, text: units } => {
            text.splice(*at..*at, units.iter().copied());
        }
        Step::Delete { at, len } => {
            text.drain(*at..at + len);
        }
    }
    Ok(())
}

fn insert(at: usize, text: &[u16]) -> Step {
    Step::Insert {
        at,
        text: text.to_vec(),
    }
}

/// A delete of `len` units, or nothing when there is nothing left to
/// delete.
fn delete(at: usize, len: usize) -> Option<Step> {
    (len > 0).then_some(Step::Delete { at, len })
}

/// A room's text and the recent edits to transform new ones against.
#[derive(Debug, Default)]
pub struct TextDoc {
    text: Vec<u16>,
    /// The number of the last edit applied.
    head: u64,
    /// (number, steps) of the last edits, oldest first.
    recent: VecDeque<(u64, Vec<Step>)>,
    keep: usize,
    max_units: usize,
}

impl TextDoc {
    /// `text` as of edit `head`, keeping the last `keep` edits to
    /// transform against.
    pub fn new(text: &str, head: u64, keep: usize) -> Self {
        Self {
            text: text.encode_utf16().collect(),
            head,
            recent: VecDeque::new(),
            keep: keep.max(1),
            max_units: MAX_TEXT_UNITS,
        }
    }

    /// Caps the text at `max_units` (tests use a small one).
    pub fn with_max_units(mut self, max_units: usize) -> Self {
        self.max_units = max_units;
        self
    }

    pub fn head(&self) -> u64 {
        self.head
    }

    pub fn text(&self) -> String {
        String::from_utf16_lossy(&self.text)
    }

    /// Transforms `steps`, made against the text at `seq`, past the edits
    /// since.
    pub fn rebase(&self, steps: Vec<Step>, seq: u64) -> Result<Vec<Step>, EditError> {
        if seq > self.head {
            return Err(EditError::FromTheFuture {
                seq,
                head: self.head,
            });
        }
        let oldest = self.recent.front().map_or(self.head, |(n, _)| n - 1);
        if seq < oldest {
            return Err(EditError::Stale { seq, oldest });
        }
        let mut steps = steps;
        for (_, done) in self.recent.iter().filter(|(n, _)| *n > seq) {
            steps = transform(&steps, done).0;
        }
        Ok(steps)
    }

    /// Applies `steps` (from `rebase`) as edit `head + 1`, whole or not at
    /// all.
    pub fn apply(&mut self, steps: Vec<Step>) -> Result<(), EditError> {
        // The length it ends at (a step out of range fails below anyway).
        let len = (steps.iter()).fold(self.text.len(), |len, s| match s {
            Step::Insert { text, .. } => len + text.len(),
            Step::Delete { len: n, .. } => len.saturating_sub(*n),
        });
        if len > self.max_units && len > self.text.len() {
            return Err(EditError::TooLong {
                len,
                max: self.max_units,
            });
        }
        match steps.as_slice() {
            [step] => apply_step(&mut self.text, step)?,
            _ => {
                // Later steps' positions depend on earlier ones: try them
                // on a copy.
                let mut text = self.text.clone();
                for step in &steps {
                    apply_step(&mut text, step)?;
                }
                self.text = text;
            }
        }
        self.head += 1;
        self.recent.push_back((self.head, steps));
        while self.recent.len() > self.keep {
            self.recent.pop_front();
        }
        Ok(())
    }

    /// Counts an event that is not an edit (the numbers are the room's).
    pub fn skip(&mut self, seq: u64) {
        self.head = seq;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(s: &str) -> Vec<u16> {
        s.encode_utf16().collect()
    }

    fn ins(at: usize, s: &str) -> Step {
        Step::Insert { at, text: units(s) }
    }

    fn del(at: usize, len: usize) -> Step {
        Step::Delete { at, len }
    }

    fn apply(text: &str, steps: &[Step]) -> String {
        let mut doc = TextDoc::new(text, 0, 10);
        doc.apply(steps.to_vec()).unwrap();
        doc.text()
    }

    /// Both orders of `a` and `b` on `text` give one text, returned.
    fn converge(text: &str, a: &[Step], b: &[Step]) -> String {
        let (a_after, b_after) = transform(a, b);
        let one = apply(&apply(text, b), &a_after);
        let two = apply(&apply(text, a), &b_after);
        assert_eq!(one, two, "{text:?} a={a:?} b={b:?}");
        one
    }

    #[test]
    fn pairs_converge_and_keep_intent() {
        assert_eq!(converge("abc", &[ins(1, "X")], &[ins(1, "Y")]), "aYXbc");
        assert_eq!(converge("abc", &[ins(3, "X")], &[ins(0, "Y")]), "YabcX");
        // An insert inside a concurrently deleted range survives.
        assert_eq!(converge("abcdef", &[ins(3, "X")], &[del(1, 4)]), "aXf");
        assert_eq!(converge("abcdef", &[del(1, 4)], &[ins(3, "X")]), "aXf");
        assert_eq!(converge("abcdef", &[del(1, 3)], &[del(2, 3)]), "af");
        assert_eq!(converge("abcdef", &[del(0, 6)], &[del(2, 1)]), "");
        // A replace (delete then insert) against an insert at its start.
        assert_eq!(
            converge("hello world", &[del(0, 5), ins(0, "howdy")], &[ins(0, ">")]),
            ">howdy world"
        );
    }

    #[test]
    fn random_edits_converge() {
        // A small deterministic generator: no dependency for a test.
        let mut seed = 0x2545F4914F6CDD1Du64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n.max(1) as u64) as usize
        };
        for _ in 0..2000 {
            let text: String = (0..next(12)).map(|i| (b'a' + i as u8) as char).collect();
            let mut edit = |len: usize| -> Vec<Step> {
                let mut steps = Vec::new();
                let mut len = len;
                for _ in 0..1 + next(3) {
                    if next(2) == 0 || len == 0 {
                        let s = ["X", "YY", "ZZZ"][next(3)];
                        steps.push(ins(next(len + 1), s));
                        len += s.len();
                    } else {
                        let at = next(len);
                        let n = 1 + next(len - at);
                        steps.push(del(at, n));
                        len -= n;
                    }
                }
                steps
            };
            let (a, b) = (edit(text.len()), edit(text.len()));
            converge(&text, &a, &b);
        }
    }

    #[test]
    fn rebase_transforms_past_newer_edits_only() {
        let mut doc = TextDoc::new("abc", 0, 10);
        doc.apply(vec![ins(0, ">")]).unwrap(); // 1: ">abc"
        doc.apply(vec![ins(4, "<")]).unwrap(); // 2: ">abc<"
        // Made against edit 1: passes edit 2 only (which, ordered first,
        // keeps its place at the same position).
        let steps = doc.rebase(vec![ins(4, "!")], 1).unwrap();
        assert_eq!(steps, vec![ins(5, "!")]);
        let steps = doc.rebase(vec![ins(1, "!")], 1).unwrap();
        assert_eq!(steps, vec![ins(1, "!")]);
        // Made against the start: passes both.
        let steps = doc.rebase(vec![del(0, 3)], 0).unwrap();
        doc.apply(steps).unwrap();
        assert_eq!(doc.text(), "><");
        assert_eq!(doc.head(), 3);
        assert!(matches!(
            doc.rebase(vec![ins(0, "x")], 4),
            Err(EditError::FromTheFuture { .. })
        ));
        let steps = doc.rebase(vec![ins(9, "x")], 3).unwrap();
        assert!(matches!(
            doc.apply(steps),
            Err(EditError::OutOfRange { .. })
        ));
        // A refused edit changes nothing, even when its first step fits.
        assert!(doc.apply(vec![ins(0, "a"), del(5, 1)]).is_err());
        assert_eq!((doc.text().as_str(), doc.head()), ("><", 3));
    }

    #[test]
    fn old_edits_are_forgotten_and_pairs_are_not_split() {
        let mut doc = TextDoc::new("", 0, 2);
        for _ in 0..4 {
            doc.apply(vec![ins(0, "😀")]).unwrap();
        }
        assert!(matches!(
            doc.rebase(vec![ins(0, "x")], 1),
            Err(EditError::Stale { oldest: 2, .. })
        ));
        assert!(doc.rebase(vec![ins(0, "x")], 2).is_ok());
        assert_eq!(
            doc.apply(vec![ins(1, "x")]),
            Err(EditError::SplitsCharacter { at: 1 })
        );
        assert_eq!(
            doc.apply(vec![del(0, 3)]),
            Err(EditError::SplitsCharacter { at: 3 })
        );
        doc.apply(vec![del(2, 2)]).unwrap();
        assert_eq!(doc.text(), "😀😀😀");
    }

    #[test]
    fn the_text_has_a_ceiling() {
        let mut doc = TextDoc::new("abc", 0, 10).with_max_units(5);
        doc.apply(vec![ins(0, "de")]).unwrap();
        assert!(matches!(
            doc.apply(vec![ins(0, "f")]),
            Err(EditError::TooLong { len: 6, max: 5 })
        ));
        // A replace that keeps the length is fine.
        doc.apply(vec![del(0, 1), ins(0, "g")]).unwrap();
        assert_eq!(doc.text(), "geabc");
    }
}
