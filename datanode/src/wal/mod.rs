//! The write-ahead log: one per shard, shared by the shard's regions.
//!
//! - [`record`]: the on-disk format (commits padded to 4 KiB blocks, CRC32C per header and
//!   payload);
//! - [`replay`]: telling a torn tail from corruption, as plain code over bytes;
//! - [`writer`]: segments on `rt::disk` and group commit.

pub mod record;
pub mod replay;
pub mod writer;

pub use writer::{Wal, WalConfig, WalError, WalRecovery, WalStats};
