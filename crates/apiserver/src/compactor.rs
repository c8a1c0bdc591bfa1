//! The compactor: keeps the store's history from growing without end, as upstream's API
//! server does for etcd (`--etcd-compaction-interval`, 5 minutes by default).
//!
//! Every interval it compacts at the revision it saw one interval before, so a revision
//! stays readable (continue tokens, watches from a revision) for at least one interval.
//! Several API servers on one store take turns through one key written with
//! compare-and-swap: a server compacts only when its write of the key wins, that is when
//! nobody else wrote it since the server last looked; the others skip that round.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use krust_store::{Revision, Store, StoreError};

/// Outside `/registry/`, so no cache or list ever sees it (upstream: `compact_rev_key`).
pub const KEY: &str = "/compact_rev_key";

/// What a server knows between rounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// The key's mod_revision when this server last read or wrote it (0: absent).
    pub key_revision: Revision,
    /// The store's revision at the previous round: the next one compacts there.
    pub store_revision: Revision,
}

/// One round: claims the turn, compacts at the previous round's revision if it won, and
/// returns what the next round starts from, with the revision compacted at (if any).
pub async fn round(
    store: &dyn Store,
    last: Round,
) -> Result<(Round, Option<Revision>), StoreError> {
    let now = store.current_revision().await?;
    let target = last.store_revision;
    let value = Bytes::from(target.to_string());
    let claimed = match last.key_revision {
        0 => store.create(KEY, value).await,
        rev => store.update(KEY, value, rev).await,
    };
    match claimed {
        Ok(kv) => {
            if target > 0 {
                store.compact(target).await?;
            }
            let next = Round {
                key_revision: kv.mod_revision,
                store_revision: now,
            };
            Ok((next, (target > 0).then_some(target)))
        }
        // Another server took this round: start again from what it wrote.
        Err(StoreError::AlreadyExists(_) | StoreError::Conflict { .. }) => {
            let key_revision = store.get(KEY).await?.map_or(0, |kv| kv.mod_revision);
            let next = Round {
                key_revision,
                store_revision: now,
            };
            Ok((next, None))
        }
        Err(StoreError::NotFound(_)) => Ok((
            Round {
                key_revision: 0,
                store_revision: now,
            },
            None,
        )),
        Err(e) => Err(e),
    }
}

/// Runs rounds every `interval` until the process ends.
pub async fn run(store: Arc<dyn Store>, interval: Duration) {
    let mut last = Round {
        key_revision: match store.get(KEY).await {
            Ok(kv) => kv.map_or(0, |kv| kv.mod_revision),
            Err(_) => 0,
        },
        store_revision: 0,
    };
    loop {
        tokio::time::sleep(interval).await;
        match round(&*store, last).await {
            Ok((next, compacted)) => {
                if let Some(rev) = compacted {
                    tracing::debug!(revision = rev, "compacted the store");
                }
                last = next;
            }
            Err(e) => tracing::warn!(error = %e, "compacting the store"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use krust_store::MemoryStore;

    async fn write(store: &MemoryStore, n: usize) {
        for _ in 0..n {
            let k = format!("/registry/x/{}", rand::random::<u64>());
            store.create(&k, Bytes::from("v")).await.expect("create");
        }
    }

    #[tokio::test]
    async fn compacts_one_round_behind_and_servers_take_turns() {
        let store = MemoryStore::new();
        write(&store, 3).await;
        // First round: nothing seen before, so nothing compacted.
        let (a1, c) = round(&store, Round::default()).await.expect("round");
        assert_eq!(c, None);
        assert_eq!(a1.store_revision, 3);
        write(&store, 3).await;
        let (a2, c) = round(&store, a1).await.expect("round");
        assert_eq!(c, Some(3));
        assert!(matches!(
            store.list_at("/registry/", None, 0, 2).await,
            Err(StoreError::Compacted { .. })
        ));
        store
            .list_at("/registry/", None, 0, 3)
            .await
            .expect("the compacted revision itself is readable");

        // A second server that read the key before the first one wrote it loses the round.
        let stale = Round {
            key_revision: a1.key_revision,
            store_revision: a2.store_revision,
        };
        let (b, c) = round(&store, stale).await.expect("round");
        assert_eq!(c, None, "the loser does not compact");
        assert_eq!(b.key_revision, a2.key_revision);
        // ... and wins the next one, as nobody wrote the key in between.
        write(&store, 2).await;
        let (_, c) = round(&store, b).await.expect("round");
        assert_eq!(c, Some(b.store_revision));
    }
}
