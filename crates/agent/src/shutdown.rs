//! Graceful node shutdown, as upstream's kubelet does it on systemd machines.
//!
//! With a grace period set, the agent holds a logind "delay" inhibitor lock for shutdown: the
//! machine's shutdown waits (up to logind's `InhibitDelayMaxUSec`) until the lock is released.
//! When logind's limit is shorter than the grace period (systemd's default is 5 s), the agent
//! raises it as upstream's kubelet does: a drop-in `[Login] InhibitDelayMaxSec=` in logind's
//! configuration directory, then SIGHUP to `systemd-logind.service` through systemd's D-Bus
//! API, then the limit is read again until logind has reloaded.
//! logind announces a shutdown with `PrepareForShutdown(true)`; the agent then marks the Node
//! NotReady, has the pod manager terminate regular pods and then critical ones
//! ([`GracePeriods`]), and releases the lock. `PrepareForShutdown(false)` (the shutdown was
//! cancelled) makes the Node Ready again and takes a new lock.
//!
//! The states, driven by [`run`]:
//! - *holding*: the lock is held, the node Ready. `true` moves to *shutting down*.
//! - *shutting down*: the Node is NotReady while the pods stop; then the lock is released
//!   (the machine goes down). A repeated `true` changes nothing; `false` moves back to
//!   *holding* after taking a new lock.
//!
//! Where the events come from is a [`ShutdownSource`]: [`Logind`] on the system D-Bus, or a
//! fake in tests.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::pod::NodeShutdown;

/// The two grace periods of `--shutdown-grace-period` and
/// `--shutdown-grace-period-critical-pods`; a zero total turns the feature off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GracePeriods {
    /// The whole time the shutdown is held back.
    pub total: Duration,
    /// The last part of it, reserved for critical pods.
    pub critical: Duration,
}

impl GracePeriods {
    pub fn enabled(&self) -> bool {
        !self.total.is_zero()
    }

    /// What regular pods get: the total less the critical pods' share.
    pub fn regular(&self) -> Duration {
        self.total.saturating_sub(self.critical)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.critical > self.total {
            return Err(format!(
                "--shutdown-grace-period-critical-pods ({:?}) must not exceed --shutdown-grace-period ({:?})",
                self.critical, self.total
            ));
        }
        Ok(())
    }
}

/// Why logind cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    #[error("connecting to the system D-Bus")]
    Connect(#[source] zbus::Error),
    #[error("subscribing to logind's PrepareForShutdown")]
    Subscribe(#[source] zbus::Error),
    #[error("taking a shutdown inhibitor lock from logind")]
    Inhibit(#[source] zbus::Error),
    #[error("writing logind's drop-in {path}")]
    DropIn {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("asking systemd to reload logind")]
    Reload(#[source] zbus::Error),
}

/// The drop-in the agent writes into logind's configuration directory.
pub const LOGIND_DROP_IN: &str = "99-krust-agent.conf";

/// The drop-in that lets a delay lock hold a shutdown back for `period` (whole seconds,
/// rounded up, as logind's setting takes them).
pub fn logind_drop_in(period: Duration) -> String {
    let secs = period.as_secs() + u64::from(period.subsec_nanos() > 0);
    format!(
        "# Written by krust agent for --shutdown-grace-period.\n[Login]\nInhibitDelayMaxSec={secs}\n"
    )
}

/// Where shutdown announcements come from, and who holds the lock that delays them.
#[async_trait::async_trait]
pub trait ShutdownSource: Send {
    /// Takes the delay lock (again, after [`release`](Self::release)).
    async fn inhibit(&mut self) -> Result<(), ShutdownError>;
    /// Releases the lock so the shutdown proceeds.
    fn release(&mut self);
    /// The next announcement: `true` the machine is shutting down, `false` a shutdown was
    /// cancelled. `None` when the source is gone for good.
    async fn next(&mut self) -> Option<bool>;
}

#[zbus::proxy(
    interface = "org.freedesktop.login1.Manager",
    default_service = "org.freedesktop.login1",
    default_path = "/org/freedesktop/login1"
)]
trait Login1Manager {
    /// Returns the lock: it holds as long as the file descriptor is open.
    fn inhibit(
        &self,
        what: &str,
        who: &str,
        why: &str,
        mode: &str,
    ) -> zbus::Result<zbus::zvariant::OwnedFd>;

    #[zbus(signal)]
    fn prepare_for_shutdown(&self, start: bool) -> zbus::Result<()>;

    #[zbus(property, name = "InhibitDelayMaxUSec")]
    fn inhibit_delay_max_usec(&self) -> zbus::Result<u64>;
}

/// The part of systemd's manager that reloads logind.
#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait Systemd1Manager {
    fn kill_unit(&self, name: &str, whom: &str, signal: i32) -> zbus::Result<()>;
}

/// systemd-logind on the system bus (`DBUS_SYSTEM_BUS_ADDRESS` names another bus).
pub struct Logind {
    conn: zbus::Connection,
    proxy: Login1ManagerProxy<'static>,
    signals: PrepareForShutdownStream,
    lock: Option<zbus::zvariant::OwnedFd>,
}

impl Logind {
    /// Connects and subscribes to `PrepareForShutdown` (before any lock is taken, so no
    /// announcement is missed).
    pub async fn connect() -> Result<Logind, ShutdownError> {
        let conn = zbus::Connection::system()
            .await
            .map_err(ShutdownError::Connect)?;
        // Uncached: logind does not announce a reloaded InhibitDelayMaxUSec.
        let proxy = Login1ManagerProxy::builder(&conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(ShutdownError::Connect)?;
        let signals = proxy
            .receive_prepare_for_shutdown()
            .await
            .map_err(ShutdownError::Subscribe)?;
        Ok(Logind {
            conn,
            proxy,
            signals,
            lock: None,
        })
    }

    /// Raises logind's `InhibitDelayMaxUSec` to `period`: writes [`logind_drop_in`] into
    /// `conf_dir`, has systemd send logind SIGHUP, and reads the limit again (logind reloads
    /// asynchronously: 100 ms, doubling, five times). Returns the limit logind then has.
    pub async fn raise_max_delay(
        &self,
        period: Duration,
        conf_dir: &std::path::Path,
    ) -> Result<Option<Duration>, ShutdownError> {
        let path = conf_dir.join(LOGIND_DROP_IN);
        let write_err = |source| ShutdownError::DropIn {
            path: path.display().to_string(),
            source,
        };
        tokio::fs::create_dir_all(conf_dir)
            .await
            .map_err(write_err)?;
        tokio::fs::write(&path, logind_drop_in(period))
            .await
            .map_err(write_err)?;
        const SIGHUP: i32 = 1;
        Systemd1ManagerProxy::new(&self.conn)
            .await
            .map_err(ShutdownError::Reload)?
            .kill_unit("systemd-logind.service", "all", SIGHUP)
            .await
            .map_err(ShutdownError::Reload)?;
        let mut wait = Duration::from_millis(100);
        for _ in 0..5 {
            tokio::time::sleep(wait).await;
            if self.max_delay().await.is_some_and(|max| max >= period) {
                break;
            }
            wait *= 2;
        }
        Ok(self.max_delay().await)
    }

    /// How long logind lets a delay lock hold a shutdown back (`InhibitDelayMaxUSec`).
    pub async fn max_delay(&self) -> Option<Duration> {
        self.proxy
            .inhibit_delay_max_usec()
            .await
            .ok()
            .map(Duration::from_micros)
    }
}

#[async_trait::async_trait]
impl ShutdownSource for Logind {
    async fn inhibit(&mut self) -> Result<(), ShutdownError> {
        let fd = self
            .proxy
            .inhibit(
                "shutdown",
                "krust-agent",
                "krust agent needs time to stop the node's pods",
                "delay",
            )
            .await
            .map_err(ShutdownError::Inhibit)?;
        self.lock = Some(fd);
        Ok(())
    }

    fn release(&mut self) {
        // Closing the descriptor is what releases a logind lock.
        self.lock = None;
    }

    async fn next(&mut self) -> Option<bool> {
        use futures::StreamExt;
        loop {
            let signal = self.signals.next().await?;
            match signal.args() {
                Ok(args) => return Some(*args.start()),
                Err(e) => tracing::warn!(error = %e, "malformed PrepareForShutdown signal"),
            }
        }
    }
}

/// The Ready condition's message while the node shuts down (upstream's words).
pub const NOT_READY_MESSAGE: &str = "node is shutting down";

/// Runs graceful shutdown until the source ends. `node` says whether the node is shutting
/// down (the heartbeat turns the Node NotReady); `pods` is the pod manager.
pub async fn run(
    mut source: impl ShutdownSource,
    periods: GracePeriods,
    node: watch::Sender<bool>,
    pods: mpsc::Sender<NodeShutdown>,
) {
    if let Err(e) = source.inhibit().await {
        tracing::warn!(error = %e, "no shutdown inhibitor lock: graceful node shutdown is off");
        return;
    }
    tracing::info!(
        total = ?periods.total,
        critical = ?periods.critical,
        "holding a shutdown inhibitor lock for graceful node shutdown"
    );
    while let Some(start) = source.next().await {
        let shutting_down = *node.borrow();
        match (start, shutting_down) {
            (true, false) => {
                tracing::info!("the machine is shutting down: stopping the node's pods");
                node.send_replace(true);
                let (done, finished) = oneshot::channel();
                let request = NodeShutdown::Start {
                    regular: periods.regular(),
                    critical: periods.critical,
                    done,
                };
                if pods.send(request).await.is_ok()
                    && tokio::time::timeout(periods.total, finished).await.is_err()
                {
                    tracing::warn!("pods still stopping when the grace period ended");
                }
                source.release();
                tracing::info!("shutdown inhibitor lock released");
            }
            (false, true) => {
                tracing::info!("the shutdown was cancelled: the node is Ready again");
                node.send_replace(false);
                let _ = pods.send(NodeShutdown::Cancelled).await;
                if let Err(e) = source.inhibit().await {
                    tracing::warn!(error = %e, "taking the shutdown inhibitor lock again");
                }
            }
            _ => {}
        }
    }
    tracing::info!("logind is gone: graceful node shutdown stops");
}

/// A [`ShutdownSource`] driven by the test: announcements in, lock events out.
#[cfg(test)]
pub mod fake {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    pub enum LockEvent {
        Taken,
        Released,
    }

    pub struct FakeSource {
        pub announcements: mpsc::UnboundedReceiver<bool>,
        pub locks: mpsc::UnboundedSender<LockEvent>,
    }

    #[async_trait::async_trait]
    impl ShutdownSource for FakeSource {
        async fn inhibit(&mut self) -> Result<(), ShutdownError> {
            let _ = self.locks.send(LockEvent::Taken);
            Ok(())
        }

        fn release(&mut self) {
            let _ = self.locks.send(LockEvent::Released);
        }

        async fn next(&mut self) -> Option<bool> {
            self.announcements.recv().await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{FakeSource, LockEvent};
    use super::*;

    #[test]
    fn the_drop_in_asks_for_whole_seconds() {
        assert_eq!(
            logind_drop_in(Duration::from_secs(30)),
            "# Written by krust agent for --shutdown-grace-period.\n[Login]\nInhibitDelayMaxSec=30\n"
        );
        assert!(logind_drop_in(Duration::from_millis(1500)).contains("InhibitDelayMaxSec=2\n"));
    }

    #[test]
    fn periods_split_and_validate() {
        let p = GracePeriods {
            total: Duration::from_secs(20),
            critical: Duration::from_secs(5),
        };
        assert!(p.enabled());
        assert_eq!(p.regular(), Duration::from_secs(15));
        assert!(p.validate().is_ok());
        assert!(!GracePeriods::default().enabled());
        let bad = GracePeriods {
            total: Duration::from_secs(5),
            critical: Duration::from_secs(10),
        };
        assert!(bad.validate().is_err());
    }

    #[tokio::test]
    async fn shutdown_stops_pods_then_releases_and_cancel_takes_the_lock_again() {
        let (announce, announcements) = mpsc::unbounded_channel();
        let (locks_tx, mut locks) = mpsc::unbounded_channel();
        let (node_tx, mut node) = watch::channel(false);
        let (pods_tx, mut pods) = mpsc::channel(4);
        let periods = GracePeriods {
            total: Duration::from_secs(20),
            critical: Duration::from_secs(5),
        };
        let task = tokio::spawn(run(
            FakeSource {
                announcements,
                locks: locks_tx,
            },
            periods,
            node_tx,
            pods_tx,
        ));
        assert_eq!(locks.recv().await, Some(LockEvent::Taken));

        announce.send(true).expect("announce");
        let Some(NodeShutdown::Start {
            regular,
            critical,
            done,
        }) = pods.recv().await
        else {
            panic!("the pod manager was not asked to stop the pods");
        };
        assert_eq!(
            (regular, critical),
            (Duration::from_secs(15), Duration::from_secs(5))
        );
        assert!(*node.borrow_and_update(), "NotReady while pods stop");
        // The lock holds until the pods are stopped.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(locks.try_recv().is_err());
        done.send(()).expect("done");
        assert_eq!(locks.recv().await, Some(LockEvent::Released));

        // A repeated announcement changes nothing; a cancellation makes the node Ready again
        // and takes a new lock.
        announce.send(true).expect("announce");
        announce.send(false).expect("cancel");
        assert!(matches!(pods.recv().await, Some(NodeShutdown::Cancelled)));
        assert_eq!(locks.recv().await, Some(LockEvent::Taken));
        node.changed().await.expect("node state");
        assert!(!*node.borrow());

        drop(announce);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("run ends with its source")
            .expect("task");
    }

    #[tokio::test]
    async fn the_lock_is_released_when_the_grace_period_ends() {
        let (announce, announcements) = mpsc::unbounded_channel();
        let (locks_tx, mut locks) = mpsc::unbounded_channel();
        let (node_tx, _node) = watch::channel(false);
        let (pods_tx, mut pods) = mpsc::channel(4);
        let periods = GracePeriods {
            total: Duration::from_millis(500),
            critical: Duration::ZERO,
        };
        tokio::spawn(run(
            FakeSource {
                announcements,
                locks: locks_tx,
            },
            periods,
            node_tx,
            pods_tx,
        ));
        assert_eq!(locks.recv().await, Some(LockEvent::Taken));
        announce.send(true).expect("announce");
        // The pod manager never answers: the lock goes after the grace period all the same.
        let _request = pods.recv().await;
        let started = tokio::time::Instant::now();
        assert_eq!(locks.recv().await, Some(LockEvent::Released));
        assert!(started.elapsed() >= Duration::from_millis(400));
    }
}
