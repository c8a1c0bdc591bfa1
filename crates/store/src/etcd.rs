//! `EtcdStore`: the [`Store`] interface on a real etcd v3 cluster, for deployments that
//! want etcd's replication instead of the embedded SQLite store.
//!
//! Ranges are read in pages sized by a byte budget (`range_page`), every page of one read at
//! the first page's revision, so no response grows with the data; gRPC's 4 MiB receive
//! limit is raised only as a backstop.
//!
//! Every write is one etcd transaction so that the compare and the write are atomic:
//! create compares `create_revision == 0`, update and delete compare `mod_revision`, and a
//! failed compare reads the key in the same transaction to tell `NotFound` from `Conflict`.
//!
//! Failover is done here, not by etcd-client: its balanced channel keeps sending a share of
//! the requests to a member that died (each failing with "tcp connect error"), so the store
//! keeps one client per endpoint, spreads requests over the members not marked down, marks a
//! member down for a while when it cannot be reached, and retries on another member every
//! read, and every write that provably never left (connection refused, no leader). A write
//! whose fate is unknown (timeout, connection lost mid-request) fails with `Unavailable`.
//! Requests carry a deadline and connections HTTP/2 keep-alives, so a dead or hung member
//! fails requests within seconds instead of hanging them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use futures::stream;

use crate::{
    Event, EventKind, KeyValue, ListResult, Result, Revision, Store, StoreError, WatchStream,
};

/// Timeouts of [`EtcdStore`]; the defaults move requests off a dead member within seconds.
#[derive(Clone, Copy, Debug)]
pub struct EtcdOptions {
    /// Limit on establishing a TCP connection to one member.
    pub connect_timeout: Duration,
    /// Deadline of one request (a watch only for its creation).
    pub request_timeout: Duration,
    /// HTTP/2 keep-alive ping interval, also while idle.
    pub keepalive_interval: Duration,
    /// How long a keep-alive ping may go unanswered before the connection is dropped.
    pub keepalive_timeout: Duration,
    /// Reads that fail with `Unavailable` are tried this many more times (on top of one try
    /// per member).
    pub read_retries: u32,
    /// How long a member that could not be reached is left out of the rotation.
    pub down_for: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(2),
            keepalive_timeout: Duration::from_secs(2),
            read_retries: 3,
            down_for: Duration::from_secs(5),
        }
    }
}

/// One etcd member and whether it is believed reachable.
struct Member {
    endpoint: String,
    client: Client,
    down_until: Mutex<Option<Instant>>,
}

impl Member {
    fn is_down(&self, now: Instant) -> bool {
        let d = self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        d.is_some_and(|until| until > now)
    }

    fn mark_down(&self, for_: Duration, why: &StoreError) {
        let mut d = self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        if d.is_none() {
            tracing::warn!(endpoint = %self.endpoint, error = %why, "etcd member unreachable");
        }
        *d = Some(Instant::now() + for_);
    }

    fn mark_up(&self) {
        let mut d = self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        if d.take().is_some() {
            tracing::info!(endpoint = %self.endpoint, "etcd member reachable again");
        }
    }
}

struct Members {
    list: Vec<Member>,
    next: AtomicUsize,
    options: EtcdOptions,
    /// Keys per range request, learnt from the sizes of the last one.
    page_keys: AtomicUsize,
}

impl Members {
    /// The next member in round-robin order that is not marked down (any one if all are).
    fn pick(&self) -> usize {
        let n = self.list.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let now = Instant::now();
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| !self.list[i].is_down(now))
            .unwrap_or(start)
    }

    fn all_down(&self) -> bool {
        let now = Instant::now();
        self.list.iter().all(|m| m.is_down(now))
    }
}

/// How a failed request went, for deciding whether to retry it elsewhere.
enum Failure {
    /// etcd answered: the error is the answer.
    Answer,
    /// The request never reached a member able to apply it: safe to retry anywhere.
    NotSent,
    /// It may or may not have been applied (timeout, connection lost mid-request).
    Unknown,
}

fn classify(e: etcd_client::Error) -> (StoreError, Failure, bool) {
    // The bool says whether the member should be left out for a while.
    let text = e.to_string();
    let err = map_err(e);
    let lower = text.to_ascii_lowercase();
    let not_sent = [
        "tcp connect error",
        "error trying to connect",
        "connection refused",
    ]
    .iter()
    .any(|m| lower.contains(m));
    let no_leader = lower.contains("no leader");
    match &err {
        _ if not_sent => (err, Failure::NotSent, true),
        // With require_leader, a member without a leader refuses before proposing anything.
        StoreError::Unavailable(_) if no_leader => (err, Failure::NotSent, true),
        // A live member answering that the cluster is busy (leader changed, timed out).
        StoreError::Unavailable(_) if lower.contains("etcdserver:") => {
            (err, Failure::Unknown, false)
        }
        StoreError::Unavailable(_) => (err, Failure::Unknown, true),
        _ => (err, Failure::Answer, false),
    }
}

/// A [`Store`] backed by an etcd v3 cluster.
#[derive(Clone)]
pub struct EtcdStore {
    members: Arc<Members>,
}

// gRPC status codes (tonic::Code) that mean "try again, maybe elsewhere".
const CODE_CANCELLED: i32 = 1;
const CODE_UNKNOWN: i32 = 2;
const CODE_DEADLINE_EXCEEDED: i32 = 4;
const CODE_UNAVAILABLE: i32 = 14;

fn is_compacted_message(msg: &str) -> bool {
    msg.contains("required revision has been compacted")
}

fn map_err(e: etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(s) => {
            let code = s.code() as i32;
            let msg = s.message().to_owned();
            if matches!(
                code,
                CODE_CANCELLED | CODE_UNKNOWN | CODE_DEADLINE_EXCEEDED | CODE_UNAVAILABLE
            ) {
                StoreError::Unavailable(format!("etcd: {msg}"))
            } else {
                StoreError::Backend(format!("etcd: {msg} (grpc code {code})"))
            }
        }
        E::TransportError(e) => StoreError::Unavailable(format!("etcd transport: {e}")),
        E::IoError(e) => StoreError::Unavailable(format!("etcd io: {e}")),
        E::WatchError(e) => StoreError::Unavailable(format!("etcd watch: {e}")),
        other => StoreError::Backend(format!("etcd: {other}")),
    }
}

/// The smallest key greater than every key starting with `prefix` (etcd's range_end trick);
/// `\0` (meaning "no upper bound") when there is none.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(&last) = end.last() {
        if last < 0xff {
            if let Some(b) = end.last_mut() {
                *b = last + 1;
            }
            return end;
        }
        end.pop();
    }
    vec![0]
}

/// The first key of a prefix range (etcd rejects empty keys: `\0` stands for "from the start").
fn range_start(prefix: &str) -> Vec<u8> {
    if prefix.is_empty() {
        vec![0]
    } else {
        prefix.as_bytes().to_vec()
    }
}

/// The first key strictly after `key`.
fn after_key(key: &str) -> Vec<u8> {
    let mut k = key.as_bytes().to_vec();
    k.push(0);
    k
}

/// About how much one range request should bring back. etcd cannot cut a range by bytes,
/// so the number of keys asked for follows the sizes seen (upstream's API server asks for
/// 10,000 keys at a time whatever their size and lifts gRPC's limit instead).
const PAGE_BYTES: usize = 4 << 20;
/// Keys in the first request of a range, and at most in any one.
const FIRST_PAGE_KEYS: usize = 1_000;
const MAX_PAGE_KEYS: usize = 10_000;
/// The backstop: gRPC's receive limit, above any page [`PAGE_BYTES`] aims at (etcd's own
/// limit on one value is 1.5 MiB, so one key always fits).
const MAX_RECEIVE_BYTES: usize = 64 << 20;

/// The next page size after `keys` keys came back in `bytes` bytes.
fn next_page_keys(keys: usize, bytes: usize) -> usize {
    let per_key = (bytes / keys.max(1)).max(1);
    (PAGE_BYTES / per_key).clamp(1, MAX_PAGE_KEYS)
}

fn is_too_large(e: &StoreError) -> bool {
    matches!(e, StoreError::Backend(m) if m.contains("message length too large"))
}

fn convert(kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    let key = kv
        .key_str()
        .map_err(|e| StoreError::Backend(format!("etcd returned a non-UTF-8 key: {e}")))?;
    Ok(KeyValue {
        key: key.to_owned(),
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

fn header_revision(h: Option<&etcd_client::ResponseHeader>) -> Result<Revision> {
    h.map(|h| h.revision())
        .ok_or_else(|| StoreError::Backend("etcd response without a header".into()))
}

fn convert_event(e: &etcd_client::Event) -> Result<Event> {
    let kv = e
        .kv()
        .ok_or_else(|| StoreError::Backend("etcd watch event without a key".into()))?;
    let prev = e.prev_kv().map(convert).transpose()?;
    match e.event_type() {
        EventType::Put => Ok(Event {
            kind: EventKind::Put,
            kv: convert(kv)?,
            prev,
        }),
        EventType::Delete => {
            // etcd's delete event carries only the key and the deletion's revision; the last
            // value comes from prev_kv (absent only when that revision was compacted).
            let last = match &prev {
                Some(p) => KeyValue {
                    mod_revision: kv.mod_revision(),
                    ..p.clone()
                },
                None => KeyValue {
                    mod_revision: kv.mod_revision(),
                    ..convert(kv)?
                },
            };
            Ok(Event {
                kind: EventKind::Delete,
                kv: last,
                prev,
            })
        }
    }
}

impl EtcdStore {
    /// Connects to the etcd cluster at `endpoints` (`http://host:port` or `host:port`) with
    /// the default options, and checks that it answers.
    pub async fn connect(endpoints: &[String]) -> Result<Self> {
        Self::connect_with(endpoints, EtcdOptions::default()).await
    }

    /// Connects with explicit timeouts, and checks that the cluster answers.
    pub async fn connect_with(endpoints: &[String], options: EtcdOptions) -> Result<Self> {
        if endpoints.is_empty() {
            return Err(StoreError::Unavailable("no etcd endpoint given".into()));
        }
        let connect = ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            .with_keep_alive(options.keepalive_interval, options.keepalive_timeout)
            .with_keep_alive_while_idle(true)
            .with_tcp_keepalive(options.keepalive_interval)
            .with_require_leader(true);
        let mut list = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            // Connecting is lazy: this only checks the address, not that the member is up.
            let client = tokio::time::timeout(
                options.request_timeout,
                Client::connect([endpoint], Some(connect.clone())),
            )
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!("connecting to etcd at {endpoint} timed out"))
            })?
            .map_err(|e| match map_err(e) {
                StoreError::Unavailable(m) | StoreError::Backend(m) => {
                    StoreError::Unavailable(format!("etcd endpoint {endpoint}: {m}"))
                }
                other => other,
            })?;
            list.push(Member {
                endpoint: endpoint.clone(),
                client,
                down_until: Mutex::new(None),
            });
        }
        let store = Self {
            members: Arc::new(Members {
                list,
                next: AtomicUsize::new(0),
                options,
                page_keys: AtomicUsize::new(FIRST_PAGE_KEYS),
            }),
        };
        store.current_revision().await.map_err(|e| match e {
            StoreError::Unavailable(m) => {
                StoreError::Unavailable(format!("etcd at {endpoints:?} does not answer: {m}"))
            }
            other => other,
        })?;
        Ok(store)
    }

    /// The etcd client of each endpoint, for what the [`Store`] interface does not cover.
    pub fn clients(&self) -> Vec<Client> {
        self.members.list.iter().map(|m| m.client.clone()).collect()
    }

    fn options(&self) -> &EtcdOptions {
        &self.members.options
    }

    /// Runs a request on one member after another until one answers: reads (`retry_unknown`)
    /// on any failure to get an answer, writes only while they provably were not sent.
    async fn run<T, F, Fut>(&self, retry_unknown: bool, f: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        self.run_on(retry_unknown, f).await.map(|(v, _)| v)
    }

    /// [`Self::run`], also telling which member answered.
    async fn run_on<T, F, Fut>(&self, retry_unknown: bool, mut f: F) -> Result<(T, usize)>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let opts = *self.options();
        let members = &self.members;
        let attempts = members.list.len() + opts.read_retries as usize;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let i = members.pick();
            let m = &members.list[i];
            let (err, failure, down) =
                match tokio::time::timeout(opts.request_timeout, f(m.client.clone())).await {
                    Ok(Ok(v)) => {
                        m.mark_up();
                        return Ok((v, i));
                    }
                    Ok(Err(e)) => classify(e),
                    Err(_) => (
                        StoreError::Unavailable(format!(
                            "etcd request to {} timed out after {:?}",
                            m.endpoint, opts.request_timeout
                        )),
                        Failure::Unknown,
                        true,
                    ),
                };
            if down {
                m.mark_down(opts.down_for, &err);
            }
            let retry = match failure {
                Failure::Answer => false,
                Failure::NotSent => true,
                Failure::Unknown => retry_unknown,
            };
            if !retry || attempt >= attempts {
                return Err(err);
            }
            tracing::debug!(attempt, endpoint = %m.endpoint, error = %err, "etcd request failed, retrying");
            if members.all_down() || !down {
                tokio::time::sleep(Duration::from_millis(100 * attempt as u64)).await;
            }
        }
    }

    async fn read<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        self.run(true, f).await
    }

    async fn txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse> {
        self.run(false, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
    }

    /// One range request of at most `want` keys from `start` (at `revision`, 0 = now), sized
    /// by the byte budget; halves the page and asks again if a response is still too large.
    async fn range_page(
        &self,
        start: &[u8],
        end: &[u8],
        want: usize,
        revision: Revision,
    ) -> Result<ListResult> {
        let mut keys = self
            .members
            .page_keys
            .load(Ordering::Relaxed)
            .clamp(1, MAX_PAGE_KEYS)
            .min(want);
        loop {
            let limit = i64::try_from(keys).unwrap_or(i64::MAX);
            let resp = self
                .read(|c| {
                    let (start, end) = (start.to_vec(), end.to_vec());
                    let mut kv = c.kv_client().max_decoding_message_size(MAX_RECEIVE_BYTES);
                    async move {
                        let mut opts = GetOptions::new().with_range(end).with_limit(limit);
                        if revision > 0 {
                            opts = opts.with_revision(revision);
                        }
                        kv.get(start, Some(opts)).await
                    }
                })
                .await;
            let resp = match resp {
                Err(e) if is_too_large(&e) && keys > 1 => {
                    keys /= 2;
                    self.members.page_keys.store(keys, Ordering::Relaxed);
                    continue;
                }
                Err(e) => return Err(self.revision_error(e, revision).await),
                Ok(r) => r,
            };
            let bytes: usize = resp
                .kvs()
                .iter()
                .map(|kv| kv.key().len() + kv.value().len())
                .sum();
            if !resp.kvs().is_empty() {
                let next = next_page_keys(resp.kvs().len(), bytes);
                self.members.page_keys.store(next, Ordering::Relaxed);
            }
            let items = resp.kvs().iter().map(convert).collect::<Result<Vec<_>>>()?;
            let current = header_revision(resp.header())?;
            return Ok(ListResult {
                items,
                revision: if revision > 0 { revision } else { current },
                // etcd counts the whole range from `start`, whatever the limit.
                remaining: u64::try_from(resp.count())
                    .unwrap_or(0)
                    .saturating_sub(resp.kvs().len() as u64),
            });
        }
    }

    /// etcd's answer to a read at a compacted or future revision, as a typed error.
    async fn revision_error(&self, e: StoreError, revision: Revision) -> StoreError {
        match &e {
            StoreError::Backend(m) if is_compacted_message(m) => {
                let oldest = self.compaction_of("", revision).await;
                StoreError::Compacted {
                    requested: revision,
                    oldest: oldest.map_or(revision + 1, |c| c - 1),
                }
            }
            StoreError::Backend(m) if m.contains("required revision is a future revision") => {
                match self.current_revision().await {
                    Ok(current) => StoreError::FutureRevision {
                        requested: revision,
                        current,
                    },
                    Err(e) => e,
                }
            }
            _ => e,
        }
    }

    /// From the `get` branch of a failed transaction: `NotFound` or `Conflict`.
    fn failed_compare(
        key: &str,
        expected: Option<Revision>,
        resp: &etcd_client::TxnResponse,
    ) -> StoreError {
        let current = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(convert),
            _ => None,
        });
        match (current, expected) {
            (Some(Ok(cur)), Some(expected)) => StoreError::Conflict {
                key: key.to_owned(),
                expected,
                current: Some(Box::new(cur)),
            },
            (Some(Err(e)), _) => e,
            _ => StoreError::NotFound(key.to_owned()),
        }
    }

    /// Returns the compaction revision etcd reports for a watch from `start`, if it does so
    /// within a second (used only once a read has said `start` is compacted).
    async fn compaction_of(&self, prefix: &str, start: Revision) -> Option<Revision> {
        let mut wc = self.members.list[self.members.pick()].client.watch_client();
        let opts = WatchOptions::new()
            .with_range(prefix_end(prefix.as_bytes()))
            .with_start_revision(start);
        let probe = async {
            let mut ws = wc.watch(range_start(prefix), Some(opts)).await.ok()?;
            loop {
                let msg = ws.message().await.ok()??;
                if msg.compact_revision() != 0 {
                    return Some(msg.compact_revision());
                }
                if msg.canceled() {
                    return None;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(1), probe)
            .await
            .ok()
            .flatten()
    }
}

struct EtcdWatch {
    members: Arc<Members>,
    member: usize,
    stream: etcd_client::WatchStream,
    buf: std::collections::VecDeque<Event>,
    after: Revision,
    done: bool,
}

impl EtcdWatch {
    async fn next(mut self) -> Option<(Result<Event>, Self)> {
        loop {
            if let Some(e) = self.buf.pop_front() {
                return Some((Ok(e), self));
            }
            if self.done {
                return None;
            }
            let msg = match self.stream.message().await {
                Ok(Some(msg)) => msg,
                Ok(None) => {
                    self.done = true;
                    return Some((
                        Err(StoreError::Unavailable("etcd closed the watch".into())),
                        self,
                    ));
                }
                Err(e) => {
                    self.done = true;
                    let (err, _, down) = classify(e);
                    if down {
                        let opts = self.members.options;
                        self.members.list[self.member].mark_down(opts.down_for, &err);
                    }
                    return Some((Err(err), self));
                }
            };
            if msg.compact_revision() != 0 {
                self.done = true;
                let err = StoreError::Compacted {
                    requested: self.after,
                    oldest: msg.compact_revision() - 1,
                };
                return Some((Err(err), self));
            }
            for e in msg.events() {
                match convert_event(e) {
                    Ok(ev) => {
                        self.after = self.after.max(ev.kv.mod_revision);
                        self.buf.push_back(ev);
                    }
                    Err(err) => {
                        self.done = true;
                        self.buf.clear();
                        return Some((Err(err), self));
                    }
                }
            }
            if msg.canceled() {
                self.done = true;
                if self.buf.is_empty() {
                    let reason = msg.cancel_reason().to_owned();
                    return Some((
                        Err(StoreError::Unavailable(format!(
                            "etcd cancelled the watch: {reason}"
                        ))),
                        self,
                    ));
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let resp = self
            .read(|mut c| {
                let key = key.to_owned();
                async move { c.get(key, None).await }
            })
            .await?;
        resp.kvs().first().map(convert).transpose()
    }

    async fn list_at(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Revision,
    ) -> Result<ListResult> {
        let mut start = match start_after {
            Some(s) if s >= prefix => after_key(s),
            _ => range_start(prefix),
        };
        let end = prefix_end(prefix.as_bytes());
        let mut items = Vec::new();
        let mut at = revision;
        loop {
            let want = match limit {
                0 => usize::MAX,
                n => n - items.len(),
            };
            // Later requests read at the first one's revision: one list, one moment.
            let page = self.range_page(&start, &end, want, at).await?;
            at = page.revision;
            if let Some(last) = page.items.last() {
                start = after_key(&last.key);
            }
            let more = page.more();
            items.extend(page.items);
            if !more || (limit > 0 && items.len() >= limit) {
                return Ok(ListResult {
                    items,
                    revision: at,
                    remaining: page.remaining,
                });
            }
        }
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value.to_vec(), None)]);
        let resp = self.txn(txn).await?;
        if !resp.succeeded() {
            return Err(StoreError::AlreadyExists(key.to_owned()));
        }
        let rev = header_revision(resp.header())?;
        Ok(KeyValue {
            key: key.to_owned(),
            value,
            create_revision: rev,
            mod_revision: rev,
        })
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
        let txn = Txn::new()
            .when([
                Compare::create_revision(key, CompareOp::Greater, 0),
                Compare::mod_revision(key, CompareOp::Equal, expected),
            ])
            .and_then([TxnOp::put(
                key,
                value.to_vec(),
                Some(PutOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.txn(txn).await?;
        if !resp.succeeded() {
            return Err(Self::failed_compare(key, Some(expected), &resp));
        }
        let rev = header_revision(resp.header())?;
        let create_revision = resp
            .op_responses()
            .into_iter()
            .find_map(|r| match r {
                TxnOpResponse::Put(p) => p.prev_key().map(|kv| kv.create_revision()),
                _ => None,
            })
            .ok_or_else(|| StoreError::Backend("etcd put returned no previous value".into()))?;
        Ok(KeyValue {
            key: key.to_owned(),
            value,
            create_revision,
            mod_revision: rev,
        })
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        let mut compares = vec![Compare::create_revision(key, CompareOp::Greater, 0)];
        if let Some(e) = expected {
            compares.push(Compare::mod_revision(key, CompareOp::Equal, e));
        }
        let txn = Txn::new()
            .when(compares)
            .and_then([TxnOp::delete(
                key,
                Some(etcd_client::DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.txn(txn).await?;
        if !resp.succeeded() {
            return Err(Self::failed_compare(key, expected, &resp));
        }
        let rev = header_revision(resp.header())?;
        let prev = resp
            .op_responses()
            .into_iter()
            .find_map(|r| match r {
                TxnOpResponse::Delete(d) => d.prev_kvs().first().map(convert),
                _ => None,
            })
            .ok_or_else(|| StoreError::NotFound(key.to_owned()))??;
        Ok(KeyValue {
            mod_revision: rev,
            ..prev
        })
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let start = after.saturating_add(1).max(1);
        let current = self.current_revision().await?;
        if start <= current {
            // Ask whether `start` is compacted: etcd only says so asynchronously on the watch,
            // a read at that revision says so at once.
            let probe = self
                .read(|mut c| {
                    let key = range_start(prefix);
                    async move {
                        let opts = GetOptions::new()
                            .with_revision(start)
                            .with_keys_only()
                            .with_limit(1);
                        c.get(key, Some(opts)).await
                    }
                })
                .await;
            if let Err(StoreError::Backend(m)) = &probe {
                if is_compacted_message(m) {
                    let compacted = self.compaction_of(prefix, start).await;
                    return Err(StoreError::Compacted {
                        requested: after,
                        oldest: compacted.map_or(after + 1, |c| c - 1),
                    });
                }
            }
            probe?;
        }
        let opts = WatchOptions::new()
            .with_range(prefix_end(prefix.as_bytes()))
            .with_start_revision(start)
            .with_prev_key();
        let (stream, member) = self
            .run_on(true, |c| {
                let (opts, key) = (opts.clone(), range_start(prefix));
                let mut wc = c
                    .watch_client()
                    .max_decoding_message_size(MAX_RECEIVE_BYTES);
                async move { wc.watch(key, Some(opts)).await }
            })
            .await?;
        let state = EtcdWatch {
            members: self.members.clone(),
            member,
            stream,
            buf: Default::default(),
            after,
            done: false,
        };
        Ok(Box::pin(stream::unfold(state, EtcdWatch::next)))
    }

    async fn current_revision(&self) -> Result<Revision> {
        let resp = self
            .read(|mut c| async move {
                c.get(vec![0], Some(GetOptions::new().with_count_only()))
                    .await
            })
            .await?;
        header_revision(resp.header())
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let compacted = self
            .run(
                false,
                |mut c| async move { c.compact(revision, None).await },
            )
            .await;
        match compacted {
            Ok(_) => Ok(()),
            // Compacting at or below the last compaction is a no-op, as in the other backends.
            Err(StoreError::Backend(m)) if is_compacted_message(&m) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_the_sizes_seen() {
        // 1,000 keys of 1 KiB: about 4,000 fit the budget.
        assert_eq!(next_page_keys(1_000, 1_000 << 10), 4_096);
        // Small keys: at most MAX_PAGE_KEYS; keys of 1.5 MiB (etcd's largest): two.
        assert_eq!(next_page_keys(10, 100), MAX_PAGE_KEYS);
        assert_eq!(next_page_keys(4, 6 << 20), 2);
        // Larger than the budget alone: one at a time, never zero.
        assert_eq!(next_page_keys(1, 64 << 20), 1);
        assert_eq!(next_page_keys(0, 0), MAX_PAGE_KEYS);
    }

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }
}
