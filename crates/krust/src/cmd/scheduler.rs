//! `krust scheduler`: the scheduler against an API server, configured by an optional
//! KubeSchedulerConfiguration file.

use std::path::PathBuf;

use anyhow::Context;

#[derive(clap::Args)]
pub struct Args {
    /// Kubeconfig of the API server to schedule for.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// A KubeSchedulerConfiguration (kubescheduler.config.k8s.io/v1) YAML file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Binds in flight at once.
    #[arg(long)]
    bind_concurrency: Option<usize>,
    /// Record a `Scheduled` event for every bound pod, as upstream does.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    scheduled_events: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            krust_scheduler::SchedulerConfig::from_yaml(&text)?
        }
        None => krust_scheduler::SchedulerConfig::default(),
    };
    if let Some(n) = args.bind_concurrency {
        config.bind_concurrency = n.max(1);
    }
    config.scheduled_events = args.scheduled_events;
    let client = super::client(&args.kubeconfig).await?;
    krust_scheduler::run(client, config, super::shutdown_signal())
        .await
        .context("scheduler")
}
