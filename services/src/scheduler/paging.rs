//! Pages of listings, bounded by count and by encoded size.
//!
//! A response must fit the gRPC message limit whatever the items hold: a page
//! of executions with large outputs, or of functions with large code, ends
//! early rather than fail. The first item is always taken (every single item
//! fits by construction: payloads, outputs and code are capped below the
//! limit), so a client following the cursor always makes progress.

use prost::Message;

/// Collects items from `candidates` until `limit` items or `budget` encoded
/// bytes; `more` says whether anything was left behind.
#[derive(Debug)]
pub(crate) struct Page<T> {
    pub(crate) items: Vec<T>,
    pub(crate) more: bool,
}

impl<T: Message> Page<T> {
    pub(crate) fn fill(
        candidates: impl IntoIterator<Item = T>,
        limit: usize,
        budget: usize,
    ) -> Page<T> {
        let mut items = Vec::new();
        let mut used = 0usize;
        let mut candidates = candidates.into_iter().peekable();
        while let Some(next) = candidates.peek() {
            // Each repeated entry costs its length plus a tag and a length prefix.
            let cost = next.encoded_len() + 1 + prost::length_delimiter_len(next.encoded_len());
            if items.len() == limit || (!items.is_empty() && used + cost > budget) {
                return Page { items, more: true };
            }
            used += cost;
            items.extend(candidates.next());
        }
        Page { items, more: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskforge_proto::common::Function;

    fn function(code_len: usize) -> Function {
        Function {
            function_id: "f".into(),
            code: vec![b'x'; code_len].into(),
            ..Default::default()
        }
    }

    #[test]
    fn stops_at_the_count() {
        let page = Page::fill((0..5).map(|_| function(1)), 3, usize::MAX);
        assert_eq!((page.items.len(), page.more), (3, true));
        let page = Page::fill((0..3).map(|_| function(1)), 3, usize::MAX);
        assert_eq!((page.items.len(), page.more), (3, false));
    }

    #[test]
    fn stops_before_the_budget_but_always_takes_one() {
        let page = Page::fill((0..5).map(|_| function(600)), 100, 1000);
        assert_eq!((page.items.len(), page.more), (1, true));
        let page = Page::fill((0..5).map(|_| function(2000)), 100, 1000);
        assert_eq!((page.items.len(), page.more), (1, true));
        let page = Page::fill((0..20).map(|_| function(100)), 100, 1000);
        let used: usize = page.items.iter().map(|f| f.encoded_len() + 3).sum();
        assert!(
            page.more && used <= 1000,
            "{} items, {used} bytes",
            page.items.len()
        );
    }
}
