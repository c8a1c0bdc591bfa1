//! Watch streams: newline-delimited JSON events from the watch cache, with the initial
//! state, bookmarks, selectors and upstream's resourceVersion semantics.
//!
//! A watcher is a task that owns its channel to the HTTP body: it replays history (or the
//! initial state), then forwards live changes until the client leaves, the timeout passes,
//! or it falls behind the broadcast (then the stream ends and the client resumes from the
//! last revision it saw, as client-go and kube-rs do).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use krust_machinery::codec;
use krust_machinery::ApiError;
use krust_store::Revision;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};

use crate::cache::{Cache, Cached, Change, ChangeKind};
use crate::glue::ObjectFilter;
use crate::options::ListOptions;
use crate::request::ResourcePath;
use crate::strategy::customresource::Conversion;

const BOOKMARK_EVERY: Duration = Duration::from_secs(10);

/// How long a watch without `timeoutSeconds` lasts (upstream's `--min-request-timeout`).
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 1800;

/// A watcher's filter: key prefix plus selectors.
pub struct Filter {
    prefix: String,
    objects: ObjectFilter,
    /// Into the watched version, for custom resources stored in another one.
    conversion: Conversion,
}

impl Filter {
    pub fn new(rp: &ResourcePath<'_>, opts: &ListOptions) -> Result<Filter, ApiError> {
        let mut prefix = rp.info.namespace_prefix(rp.namespace.as_deref());
        let mut fields = opts.field_selector.as_deref();
        // A watch on one object (`/pods/<name>`) narrows the prefix to its key.
        if let Some(name) = &rp.name {
            prefix = rp.info.key(rp.namespace.as_deref(), name);
            fields = None;
        }
        Ok(Filter {
            prefix,
            objects: ObjectFilter::new(rp.info, opts.label_selector.as_deref(), fields)?,
            conversion: Conversion::of(rp.info),
        })
    }

    fn key_matches(&self, key: &str) -> bool {
        key.starts_with(&self.prefix)
            && (!self.prefix.ends_with('/') || !key[self.prefix.len()..].is_empty())
    }

    fn object_matches(&self, value: &[u8]) -> bool {
        self.objects.matches_encoded(value)
    }
}

fn event(filter: &Filter, kind: &str, value: &[u8], rv: Revision) -> Bytes {
    let obj = filter
        .conversion
        .apply(codec::splice_resource_version(value, rv));
    let mut out = Vec::with_capacity(obj.len() + 32);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    out.extend_from_slice(&obj);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

fn bookmark(api_version: &str, kind: &str, rv: Revision, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let ev = json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version, "metadata": meta}});
    let mut s = ev.to_string();
    s.push('\n');
    Bytes::from(s)
}

fn error_event(e: &ApiError) -> Bytes {
    let mut s = json!({"type": "ERROR", "object": e.to_status()}).to_string();
    s.push('\n');
    Bytes::from(s)
}

/// Translates one change for a filtered watcher: a change into or out of the selector's
/// set is an ADDED or DELETED event, as upstream's cacher does.
fn translate(filter: &Filter, change: &Change) -> Option<Bytes> {
    if !filter.key_matches(&change.key) {
        return None;
    }
    let now = change.kind != ChangeKind::Deleted && filter.object_matches(&change.value);
    let before = match (&change.prev, change.kind) {
        (Some(p), ChangeKind::Modified | ChangeKind::Deleted) => filter.object_matches(p),
        (None, ChangeKind::Deleted) => filter.object_matches(&change.value),
        _ => false,
    };
    match (before, now) {
        (false, true) => Some(event(filter, "ADDED", &change.value, change.revision)),
        (true, true) => Some(event(
            filter,
            if change.kind == ChangeKind::Added {
                "ADDED"
            } else {
                "MODIFIED"
            },
            &change.value,
            change.revision,
        )),
        (true, false) => Some(event(filter, "DELETED", &change.value, change.revision)),
        (false, false) => None,
    }
}

/// Starts a watcher task and returns the receiving end of its body channel.
pub fn start(
    cache: Arc<Cache>,
    rp: &ResourcePath<'_>,
    opts: &ListOptions,
) -> Result<mpsc::Receiver<Bytes>, ApiError> {
    let filter = Filter::new(rp, opts)?;
    let bookmarks = opts.allow_watch_bookmarks;
    let send_initial = opts.send_initial_events;
    let timeout = Duration::from_secs(
        opts.timeout_seconds
            .and_then(|t| u64::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_TIMEOUT_SECONDS),
    );
    let rv = opts.resource_version.clone();
    let api_version = rp.info.api_version();
    let kind = rp.info.kind.to_string();
    let (tx, rx) = mpsc::channel::<Bytes>(256);

    // Initial state: unset or "0" resourceVersion (or sendInitialEvents) lists current
    // objects as ADDED first; a specific revision replays history after it.
    type Start = (
        Vec<(String, Cached)>,
        Vec<Arc<Change>>,
        broadcast::Receiver<Arc<Change>>,
        Revision,
    );
    let (initial, history, live, start_rev): Start = match (rv.as_deref(), send_initial) {
        (_, Some(true)) | (None, None) | (Some("0"), None) => {
            let (items, rev, rx) = cache.snapshot_and_subscribe(&filter.prefix);
            (items, Vec::new(), rx, rev)
        }
        (Some(r), _) => {
            let after: Revision = r
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {r}")))?;
            match cache.changes_since(after) {
                Ok((history, rx)) => (Vec::new(), history, rx, after),
                Err(e) => {
                    let err = ApiError::Gone {
                        message: e.to_string(),
                    };
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let _ = tx.send(error_event(&err)).await;
                    });
                    return Ok(rx);
                }
            }
        }
        (None, Some(false)) => {
            let (history, rx) =
                cache
                    .changes_since(cache.revision())
                    .map_err(|e| ApiError::Gone {
                        message: e.to_string(),
                    })?;
            (Vec::new(), history, rx, cache.revision())
        }
    };

    tokio::spawn(async move {
        let mut live = live;
        let mut last = start_rev;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        for (key, c) in initial {
            if filter.key_matches(&key)
                && filter.object_matches(&c.value)
                && tx
                    .send(event(&filter, "ADDED", &c.value, c.mod_revision))
                    .await
                    .is_err()
            {
                return;
            }
        }
        // As upstream, the end of the initial events is marked only for clients that take
        // bookmarks.
        if send_initial == Some(true)
            && bookmarks
            && tx
                .send(bookmark(&api_version, &kind, last, true))
                .await
                .is_err()
        {
            return;
        }
        for change in history {
            last = change.revision;
            if let Some(ev) = translate(&filter, &change) {
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
        }
        let mut tick = tokio::time::interval(BOOKMARK_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = tick.tick(), if bookmarks => {
                    if tx.send(bookmark(&api_version, &kind, last, false)).await.is_err() {
                        return;
                    }
                }
                change = live.recv() => match change {
                    Ok(change) => {
                        if change.revision <= last {
                            continue;
                        }
                        last = change.revision;
                        if let Some(ev) = translate(&filter, &change) {
                            if tx.send(ev).await.is_err() {
                                return;
                            }
                        }
                    }
                    // Fell behind or the cache restarted: end the stream; the client
                    // resumes from `last`.
                    Err(_) => return,
                },
            }
        }
    });
    Ok(rx)
}
