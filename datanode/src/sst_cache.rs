//! A shard's cache of SST bytes, so that queries stop reading (and, on S3, fetching)
//! the same immutable files again and again. Plain data, bounded by bytes, first in first
//! out. SSTs never change once written; the engine removes a key whenever it writes or
//! deletes the object under it, so a re-created region cannot read an old file's bytes.

use std::collections::{HashMap, VecDeque};

pub struct SstCache {
    entries: HashMap<String, bytes::Bytes>,
    /// Keys in insertion order; may hold keys removed since (skipped at eviction).
    order: VecDeque<String>,
    bytes: usize,
    bytes_max: usize,
    pub hits: u64,
    pub misses: u64,
}

impl SstCache {
    pub fn new(bytes_max: usize) -> SstCache {
        SstCache {
            entries: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            bytes_max,
            hits: 0,
            misses: 0,
        }
    }

    pub fn get(&mut self, key: &str) -> Option<bytes::Bytes> {
        let found = self.entries.get(key).cloned();
        match found {
            Some(_) => self.hits += 1,
            None => self.misses += 1,
        }
        found
    }

    /// Caches `bytes` under `key`, evicting the oldest entries to stay within the
    /// budget; a file larger than the whole budget is not cached.
    pub fn insert(&mut self, key: String, bytes: bytes::Bytes) {
        if bytes.len() > self.bytes_max {
            return;
        }
        self.remove(&key);
        while self.bytes + bytes.len() > self.bytes_max {
            let oldest = self.order.pop_front().expect("cached bytes have keys");
            if let Some(evicted) = self.entries.remove(&oldest) {
                self.bytes -= evicted.len();
            }
        }
        self.bytes += bytes.len();
        self.order.push_back(key.clone());
        self.entries.insert(key, bytes);
        // Removed keys linger in `order`; keep it within twice the live entries.
        if self.order.len() > 2 * self.entries.len() + 16 {
            let entries = &self.entries;
            self.order.retain(|key| entries.contains_key(key));
        }
        assert!(
            self.bytes <= self.bytes_max,
            "the cache stays within its budget"
        );
    }

    pub fn remove(&mut self, key: &str) {
        if let Some(removed) = self.entries.remove(key) {
            self.bytes -= removed.len();
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(len: usize) -> bytes::Bytes {
        bytes::Bytes::from(vec![7u8; len])
    }

    #[test]
    fn the_oldest_files_go_first_and_the_budget_holds() {
        let mut cache = SstCache::new(100);
        cache.insert("a".into(), file(40));
        cache.insert("b".into(), file(40));
        assert_eq!(cache.get("a").map(|b| b.len()), Some(40));
        cache.insert("c".into(), file(40));
        assert_eq!(cache.get("a"), None, "the oldest was evicted");
        assert!(cache.get("b").is_some() && cache.get("c").is_some());
        assert_eq!(cache.bytes(), 80);
        cache.insert("huge".into(), file(101));
        assert_eq!(
            cache.get("huge"),
            None,
            "larger than the budget: not cached"
        );
        assert_eq!((cache.hits, cache.misses), (3, 2));
    }

    #[test]
    fn a_removed_or_replaced_key_never_answers_with_old_bytes() {
        let mut cache = SstCache::new(1000);
        cache.insert("k".into(), file(10));
        cache.remove("k");
        assert_eq!(cache.get("k"), None);
        assert_eq!(cache.bytes(), 0);
        cache.insert("k".into(), file(20));
        cache.insert("k".into(), file(30));
        assert_eq!(cache.get("k").map(|b| b.len()), Some(30));
        assert_eq!(cache.bytes(), 30);
        // Many removals keep the order queue bounded.
        for i in 0..1000 {
            cache.insert(format!("x{i}"), file(1));
            cache.remove(&format!("x{i}"));
        }
        assert!(cache.order.len() <= 2 * cache.entries.len() + 17);
    }
}
