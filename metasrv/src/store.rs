//! The catalog made durable on one replica: commands are checked against the state,
//! appended to a [`metronome_core::journal`] edit log and synced, and only then applied.
//!
//! This is the seam openraft will take over in cluster mode: there, a committed raft
//! entry is what makes a command durable, and [`Catalog::apply`] runs on every replica.

use std::path::{Path, PathBuf};

use metronome_core::journal::{self, JournalLimits};
use metronome_core::rt::disk::Disk;

use metronome_catalog::{Catalog, CatalogError, Command};

/// Commands logged before the catalog is checkpointed again.
const EDITS_PER_CHECKPOINT: u64 = 256;
const LIMITS: JournalLimits = JournalLimits {
    checkpoint_bytes_max: 256 * 1024 * 1024,
    edits_bytes_max: 64 * 1024 * 1024,
};
const CHECKPOINT_NAME: &str = "catalog";

/// Why a command did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Refused(#[from] CatalogError),
    /// The command may or may not be durable; the store refuses further commands, since
    /// its memory may no longer match its disk.
    #[error("the catalog could not be written to {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the catalog is unavailable after an earlier write failure")]
    Failed,
}

pub struct CatalogStore {
    disk: Disk,
    dir: PathBuf,
    catalog: Catalog,
    /// The version of the checkpoint whose edit log receives new commands.
    checkpoint_version: u64,
    failed: bool,
}

impl CatalogStore {
    /// Opens the catalog under `dir`, creating it if there is none.
    pub async fn open(disk: Disk, dir: impl Into<PathBuf>) -> Result<CatalogStore, String> {
        let dir = dir.into();
        let path = dir.join(CHECKPOINT_NAME);
        let loaded =
            journal::load::<Catalog, Command>(&disk, &path, LIMITS, |catalog| catalog.version)
                .await?;
        let (catalog, checkpoint_version) = match loaded {
            Some((mut catalog, commands)) => {
                let checkpoint_version = catalog.version;
                for (index, command) in commands.iter().enumerate() {
                    // Every logged command was checked before it was logged; one that no
                    // longer applies means the log and the code disagree.
                    catalog.apply(command).map_err(|error| {
                        format!(
                            "catalog edit {index} after checkpoint {checkpoint_version} \
                             in {} no longer applies: {error}",
                            dir.display()
                        )
                    })?;
                }
                (catalog, checkpoint_version)
            }
            None => {
                let catalog = Catalog::default();
                journal::store_checkpoint(&disk, &dir, CHECKPOINT_NAME, &catalog, 0)
                    .await
                    .map_err(|error| {
                        format!("cannot create the catalog in {}: {error}", dir.display())
                    })?;
                (catalog, 0)
            }
        };
        Ok(CatalogStore {
            disk,
            dir,
            catalog,
            checkpoint_version,
            failed: false,
        })
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Applies `command` durably: when this returns `Ok`, the change survives a crash.
    /// A command that changes nothing is not logged.
    pub async fn execute(&mut self, command: Command) -> Result<(), StoreError> {
        if self.failed {
            return Err(StoreError::Failed);
        }
        if self.catalog.is_noop(&command) {
            return Ok(());
        }
        let mut next = self.catalog.clone();
        next.apply(&command)?;
        if let Err(error) =
            journal::append_edit(&self.disk, &self.dir, self.checkpoint_version, &command).await
        {
            self.failed = true;
            return Err(StoreError::Io {
                path: journal::edits_path(&self.dir, self.checkpoint_version),
                error,
            });
        }
        self.catalog = next;
        if self.catalog.version - self.checkpoint_version >= EDITS_PER_CHECKPOINT {
            let version = self.catalog.version;
            match journal::store_checkpoint(
                &self.disk,
                &self.dir,
                CHECKPOINT_NAME,
                &self.catalog,
                version,
            )
            .await
            {
                Ok(()) => self.checkpoint_version = version,
                // The command is durable in the log; a later checkpoint may succeed.
                Err(error) => tracing::warn!(%error, "cannot checkpoint the catalog"),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metronome_catalog::{Route, DEFAULT_DATABASE};
    use metronome_core::rt::disk::SimDisk;

    fn ensure(name: &str, label: &str) -> Command {
        Command::EnsureMetric {
            database: DEFAULT_DATABASE.into(),
            name: name.into(),
            labels: vec![label.into()],
        }
    }

    #[test]
    fn commands_survive_a_crash_across_checkpoints_and_a_torn_tail_is_cut() {
        futures::executor::block_on(async {
            let sim = SimDisk::new(5);
            let disk = Disk::sim(sim.clone());
            let mut store = CatalogStore::open(disk.clone(), "meta").await.unwrap();
            store
                .execute(Command::CreateMetricRegions {
                    database: DEFAULT_DATABASE.into(),
                    routes: vec![Route {
                        datanode: 0,
                        shard: 1,
                    }],
                })
                .await
                .unwrap();
            let metrics = EDITS_PER_CHECKPOINT as usize + 10;
            for i in 0..metrics {
                store
                    .execute(ensure(&format!("m{i}"), "job"))
                    .await
                    .unwrap();
            }
            let refused = store.execute(ensure("m0", "1bad")).await.unwrap_err();
            assert!(matches!(refused, StoreError::Refused(_)));
            let expected = store.catalog().clone();
            assert!(store.checkpoint_version > 0, "a checkpoint was written");
            sim.crash();

            let reopened = CatalogStore::open(disk.clone(), "meta").await.unwrap();
            assert_eq!(reopened.catalog(), &expected);

            // A torn append at the log's end is cut off; the commands before it stay.
            let log = journal::edits_path(Path::new("meta"), reopened.checkpoint_version);
            let file = disk
                .open(&log, metronome_core::rt::disk::OpenOptions::write())
                .await
                .unwrap();
            file.append(vec![200, 0, 0, 0, 1, 2]).await.unwrap();
            file.sync_data().await.unwrap();
            drop(file);
            let mut reopened = CatalogStore::open(disk.clone(), "meta").await.unwrap();
            assert_eq!(reopened.catalog(), &expected);
            reopened.execute(ensure("late", "job")).await.unwrap();
            let again = CatalogStore::open(disk, "meta").await.unwrap();
            assert!(again.catalog().table(DEFAULT_DATABASE, "late").is_ok());
        });
    }
}
