//! `krust token create|list|delete`: bootstrap tokens for joining nodes, as `kubeadm token`.
//! A token is a Secret of type `bootstrap.kubernetes.io/token` in kube-system; the printed
//! join token adds the hash of the cluster CA's public key, so that `krust agent --token`
//! can trust the server without a CA file.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::Secret;
use krust_machinery::bootstrap::{self, Token, TokenSecret};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::Api;

#[derive(clap::Args)]
pub struct Args {
    /// Kubeconfig of a user who may manage Secrets in kube-system.
    #[arg(
        long,
        env = "KUBECONFIG",
        global = true,
        default_value = "/var/lib/krust/admin.kubeconfig"
    )]
    kubeconfig: PathBuf,
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(clap::Subcommand)]
enum TokenCommand {
    /// Make a join token and print it (nothing else on stdout).
    Create {
        /// How long the token may be used (e.g. 24h, 30m); 0 never expires.
        #[arg(long, default_value = "24h", value_parser = super::controllers::parse_duration)]
        ttl: Duration,
        /// What the token is for, shown by `krust token list`.
        #[arg(long)]
        description: Option<String>,
        /// Extra groups the token's user is in (each must start with
        /// `system:bootstrappers:`).
        #[arg(long, value_delimiter = ',', default_value = bootstrap::DEFAULT_EXTRA_GROUP)]
        groups: Vec<String>,
    },
    /// List the bootstrap tokens.
    List,
    /// Delete bootstrap tokens, by id or by the whole token.
    Delete {
        #[arg(required = true)]
        tokens: Vec<String>,
    },
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let kc = kube::config::Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    let ca = config
        .root_cert
        .as_ref()
        .and_then(|c| c.first().cloned())
        .context(
        "the kubeconfig has no certificate-authority(-data): the join token pins the cluster CA",
    )?;
    let client = kube::Client::try_from(config)?;
    let secrets: Api<Secret> = Api::namespaced(client, bootstrap::NAMESPACE);
    match args.command {
        TokenCommand::Create {
            ttl,
            description,
            groups,
        } => {
            let token = Token::from_random(&rand::random());
            let now = krust_machinery::object::now_unix();
            let stored = TokenSecret {
                id: token.id.clone(),
                secret: token.secret.clone(),
                expiration: (!ttl.is_zero())
                    .then(|| krust_machinery::object::format_unix(now + ttl.as_secs() as i64)),
                description,
                extra_groups: groups,
                authentication: true,
                signing: true,
            };
            let secret: Secret = serde_json::from_value(stored.to_secret())?;
            secrets
                .create(&PostParams::default(), &secret)
                .await
                .context("creating the token's Secret")?;
            let hash = krust_agent::credentials::join::spki_hash(&ca)?;
            println!(
                "{}",
                krust_agent::credentials::join::format_token(&hash, &token)
            );
        }
        TokenCommand::List => list(&secrets).await?,
        TokenCommand::Delete { tokens } => {
            for t in tokens {
                let id = t
                    .rsplit("::")
                    .next()
                    .unwrap_or(&t)
                    .split('.')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                anyhow::ensure!(id.len() == 6, "{t:?} is neither a token id nor a token");
                secrets
                    .delete(&bootstrap::secret_name(&id), &DeleteParams::default())
                    .await
                    .with_context(|| format!("deleting token {id}"))?;
                println!("bootstrap token {id:?} deleted");
            }
        }
    }
    Ok(())
}

async fn list(secrets: &Api<Secret>) -> anyhow::Result<()> {
    let lp = ListParams::default().fields(&format!("type={}", bootstrap::SECRET_TYPE));
    let now = krust_machinery::object::now_unix();
    println!(
        "{:<8} {:<10} {:<22} {:<28} {:<24} EXTRA GROUPS",
        "ID", "TTL", "EXPIRES", "USAGES", "DESCRIPTION"
    );
    for s in secrets.list(&lp).await.context("listing tokens")? {
        let Ok(t) = TokenSecret::from_secret(&serde_json::to_value(&s)?) else {
            continue;
        };
        let ttl = match t.expires_at() {
            None => "<forever>".to_string(),
            Some(at) if at <= now => "<expired>".to_string(),
            Some(at) => human(at - now),
        };
        let usages: Vec<&str> = [(t.authentication, "authentication"), (t.signing, "signing")]
            .into_iter()
            .filter_map(|(on, u)| on.then_some(u))
            .collect();
        println!(
            "{:<8} {:<10} {:<22} {:<28} {:<24} {}",
            t.id,
            ttl,
            t.expiration.as_deref().unwrap_or("<never>"),
            usages.join(","),
            t.description.as_deref().unwrap_or("<none>"),
            t.extra_groups.join(","),
        );
    }
    Ok(())
}

fn human(secs: i64) -> String {
    match secs {
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3_600 => format!("{}h", s / 3_600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
