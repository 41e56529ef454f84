//! A shard's cache of parsed SSTs (bytes and footer), so that queries stop reading (and,
//! on S3, fetching) and parsing the same immutable files again and again. Plain data,
//! bounded by bytes, first in first out. SSTs never change once written; the engine removes a key whenever it writes or
//! deletes the object under it, so a re-created region cannot read an old file's bytes.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use crate::sst::SstFile;

/// What the cache holds of a file: the parsed file, and its size for the budget.
#[derive(Clone)]
pub struct Cached {
    pub file: Rc<SstFile>,
    pub bytes: usize,
}

pub struct SstCache {
    entries: HashMap<String, Cached>,
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

    pub fn get(&mut self, key: &str) -> Option<Rc<SstFile>> {
        let found = self.entries.get(key).map(|cached| cached.file.clone());
        match found {
            Some(_) => self.hits += 1,
            None => self.misses += 1,
        }
        found
    }

    /// Caches `file` under `key`, evicting the oldest entries to stay within the
    /// budget; a file larger than the whole budget is not cached.
    pub fn insert(&mut self, key: String, file: Rc<SstFile>) {
        let bytes = file.memory_bytes();
        if bytes > self.bytes_max {
            return;
        }
        self.remove(&key);
        while self.bytes + bytes > self.bytes_max {
            let oldest = self.order.pop_front().expect("cached bytes have keys");
            if let Some(evicted) = self.entries.remove(&oldest) {
                self.bytes -= evicted.bytes;
            }
        }
        self.bytes += bytes;
        self.order.push_back(key.clone());
        self.entries.insert(key, Cached { file, bytes });
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
            self.bytes -= removed.bytes;
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metronome_core::data::{FieldColumn, FieldType, RegionSchema, Row, TimeUnit, Value};

    /// A parsed SST of `rows` rows of one series.
    fn file(rows: i64) -> Rc<SstFile> {
        let schema = RegionSchema {
            tags: vec!["host".into()],
            time_index: "ts".into(),
            time_unit: TimeUnit::Millisecond,
            fields: vec![FieldColumn {
                name: "v".into(),
                field_type: FieldType::Float64,
            }],
        };
        let rows: Vec<(u64, Row)> = (0..rows)
            .map(|ts| {
                (
                    1,
                    Row {
                        tags: vec!["a".into()],
                        ts,
                        // Scattered values, so that a file's size grows with its rows.
                        fields: vec![Value::Float64(
                            (ts.wrapping_mul(2_654_435_761) % 1_000_003) as f64 / 7.0,
                        )],
                    },
                )
            })
            .collect();
        let (bytes, _) = crate::sst::encode(&schema, 1, &rows).unwrap();
        Rc::new(SstFile::parse(bytes.into()).unwrap())
    }

    #[test]
    fn the_oldest_files_go_first_and_the_budget_holds() {
        let (a, b, c) = (file(10), file(10), file(10));
        let size = a.memory_bytes();
        assert!(a.memory_bytes() == b.memory_bytes() && b.memory_bytes() == c.memory_bytes());
        let mut cache = SstCache::new(2 * size + size / 2);
        cache.insert("a".into(), a);
        cache.insert("b".into(), b);
        assert!(cache.get("a").is_some());
        cache.insert("c".into(), c);
        assert!(cache.get("a").is_none(), "the oldest was evicted");
        assert!(cache.get("b").is_some() && cache.get("c").is_some());
        assert_eq!(cache.bytes(), 2 * size);
        let huge = file(100_000);
        assert!(huge.memory_bytes() > 2 * size + size / 2);
        cache.insert("huge".into(), huge);
        assert!(
            cache.get("huge").is_none(),
            "larger than the budget: not cached"
        );
        assert_eq!((cache.hits, cache.misses), (3, 2));
    }

    #[test]
    fn a_removed_or_replaced_key_never_answers_with_an_old_file() {
        let mut cache = SstCache::new(1 << 30);
        cache.insert("k".into(), file(10));
        cache.remove("k");
        assert!(cache.get("k").is_none());
        assert_eq!(cache.bytes(), 0);
        let newer = file(20);
        cache.insert("k".into(), file(30));
        cache.insert("k".into(), newer.clone());
        assert!(Rc::ptr_eq(&cache.get("k").unwrap(), &newer));
        assert_eq!(cache.bytes(), newer.memory_bytes());
        // Many removals keep the order queue bounded.
        let small = file(1);
        for i in 0..1000 {
            cache.insert(format!("x{i}"), small.clone());
            cache.remove(&format!("x{i}"));
        }
        assert!(cache.order.len() <= 2 * cache.entries.len() + 17);
    }
}
