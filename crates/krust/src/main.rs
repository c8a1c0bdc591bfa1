//! The `krust` binary: parses flags and wires the components together. Nothing else.
//! One file per subcommand in `cmd/`.

mod cmd;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: profiles of the API server and the scheduler under
/// load spent about 30% of their CPU in glibc's malloc and free (consolidation of freed
/// chunks above all); every component allocates many short-lived JSON values and objects.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

#[derive(Subcommand)]
enum Command {
    /// Run the control plane: the API server on its store, and the components it hosts.
    Server(cmd::server::Args),
    /// Run the controller manager against an API server.
    ControllerManager(cmd::controllers::Args),
    /// Simulate nodes (like kwok): register them and run their pods without containers.
    Sim(cmd::sim::Args),
    /// Run the scheduler against an API server.
    Scheduler(cmd::scheduler::Args),
    /// Run the node agent (kubelet): register this machine as a node and run its pods.
    Agent(cmd::agent::Args),
    /// Run the service proxy (kube-proxy): Services as nftables rules on this machine.
    Proxy(cmd::proxy::Args),
    /// Remove what a node agent left on this machine: its pods, containerd and bridge.
    AgentReset(cmd::agent::ResetArgs),
    /// Manage the bootstrap tokens nodes join with (`krust agent --token`).
    Token(cmd::token::Args),
}

/// mimalloc's `mi_option_purge_delay` (the enum's 16th member in mimalloc 3; the Rust crate
/// names no constant for it). A test checks that it is the option whose default is 1000 ms.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The node's own processes give freed memory back to the system at once instead of after
/// mimalloc's default second: a thread that frees a burst and then sleeps (an agent between
/// pod events) otherwise keeps it. Measured on the node agent with 50 pods: 1.3 MiB less
/// anonymous memory (15 MiB less right after start) and no more CPU. The API server keeps
/// the default; purging at once was not measured under its load.
#[allow(unsafe_code)]
fn return_freed_memory_at_once() {
    // SAFETY: mimalloc's options may be set while no other thread allocates; the tokio
    // runtime, the only other source of threads, is built after this.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}

/// The log filter without `KRUST_LOG`: hickory's server logs every DNS query at info.
const DEFAULT_LOG: &str =
    "info,hickory_server=warn,hickory_proto=warn,hickory_net=warn,hickory_resolver=warn";

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KRUST_LOG")
                .unwrap_or_else(|_| DEFAULT_LOG.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if matches!(cli.command, Command::Agent(_) | Command::Proxy(_)) {
        return_freed_memory_at_once();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Server(args) => cmd::server::run(args).await,
            Command::ControllerManager(args) => cmd::controllers::run(args).await,
            Command::Sim(args) => cmd::sim::run(args).await,
            Command::Scheduler(args) => cmd::scheduler::run(args).await,
            Command::Agent(args) => cmd::agent::run(args).await,
            Command::Proxy(args) => cmd::proxy::run(args).await,
            Command::AgentReset(args) => cmd::agent::reset(args).await,
            Command::Token(args) => cmd::token::run(args).await,
        }
    })
}

#[cfg(test)]
mod tests {
    /// Guards the hard-coded option number across mimalloc upgrades: the purge delay is the
    /// only option that defaults to 1000 (ms).
    #[test]
    #[allow(unsafe_code)]
    fn purge_delay_option_number() {
        // SAFETY: reads an option; no option is set in this test binary.
        let default = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(default, 1000);
    }
}
