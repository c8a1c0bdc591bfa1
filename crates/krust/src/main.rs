//! The `krust` binary: parses flags and wires the components together. Nothing else.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "krust",
    version,
    about = "A Kubernetes-compatible container orchestrator in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum StoreKind {
    /// The embedded store in the data directory (SQLite, durable, no other process).
    Embedded,
    /// An etcd v3 cluster (--etcd-endpoints), shared by several API servers.
    Etcd,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane: the API server on its store.
    Server {
        /// Directory for the embedded store, certificates and kubeconfig.
        #[arg(long, default_value = "/var/lib/krust")]
        data_dir: PathBuf,
        /// Address the HTTPS API listens on.
        #[arg(long, default_value = "127.0.0.1:6443")]
        listen: SocketAddr,
        /// Where to write the admin kubeconfig (default: DATA_DIR/admin.kubeconfig).
        #[arg(long)]
        kubeconfig_out: Option<PathBuf>,
        /// Which store keeps the cluster's state.
        #[arg(long, value_enum, default_value = "embedded")]
        store: StoreKind,
        /// etcd client URLs, comma-separated (with --store etcd).
        #[arg(long, value_delimiter = ',')]
        etcd_endpoints: Vec<String>,
        /// CIDR that Service cluster IPs come from.
        #[arg(long, default_value = "10.43.0.0/16")]
        service_cidr: String,
        /// Extra names or addresses for the serving certificate.
        #[arg(long = "tls-san")]
        tls_sans: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KRUST_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Server {
            data_dir,
            listen,
            kubeconfig_out,
            store,
            etcd_endpoints,
            service_cidr,
            tls_sans,
        } => {
            std::fs::create_dir_all(&data_dir)
                .with_context(|| format!("creating {}", data_dir.display()))?;
            let store: Arc<dyn krust_store::Store> = match store {
                StoreKind::Embedded => Arc::new(
                    krust_store::SqliteStore::open(&data_dir.join("db"))
                        .context("opening the embedded store")?,
                ),
                StoreKind::Etcd => {
                    anyhow::ensure!(
                        !etcd_endpoints.is_empty(),
                        "--store etcd needs --etcd-endpoints"
                    );
                    Arc::new(
                        krust_store::EtcdStore::connect(&etcd_endpoints)
                            .await
                            .context("connecting to etcd")?,
                    )
                }
            };
            let kubeconfig_out =
                kubeconfig_out.unwrap_or_else(|| data_dir.join("admin.kubeconfig"));
            let config = krust_apiserver::Config {
                listen,
                data_dir,
                kubeconfig_out,
                tls_sans,
                service_cidr,
            };
            let running = krust_apiserver::start(config, store, shutdown_signal()).await?;
            tracing::info!("krust API server listening on https://{}", running.addr);
            println!(
                "krust is ready. Point kubectl at it with:\n  export KUBECONFIG={}",
                running.kubeconfig.display()
            );
            running.task.await?;
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
