//! What the node's nftables data paths (the service proxy and NetworkPolicy enforcement)
//! share: running `nft` and its companions (`conntrack`, `modprobe`) with a script on
//! stdin, in the host's network namespace or a test's, writing sysctls without `sysctl`
//! (a minimal Debian has no procps), and the names of the API's protocols.
//!
//! Each backend renders its own table and replaces it whole with one `nft -f -`, which
//! nftables applies as one transaction.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("running {command}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("{command} failed: {stderr}")]
    Command { command: String, stderr: String },
}

/// A Service or NetworkPolicy port's protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The API's name (`TCP` when absent, as the API defaults it); None for anything else.
    pub fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// The name nftables uses.
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// Runs programs in one network namespace: the host's, or a named one (`ip netns exec`),
/// which is how the backends' suites try their rules for real.
#[derive(Clone, Debug, Default)]
pub struct Runner {
    netns: Option<String>,
}

impl Runner {
    /// Programs in the host's namespace.
    pub fn host() -> Runner {
        Runner { netns: None }
    }

    /// Programs inside network namespace `netns`.
    pub fn in_netns(netns: &str) -> Runner {
        Runner {
            netns: Some(netns.to_string()),
        }
    }

    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    fn command(&self, program: &str) -> tokio::process::Command {
        match &self.netns {
            Some(ns) => {
                let mut c = tokio::process::Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => tokio::process::Command::new(program),
        }
    }

    /// Runs `program args` with `stdin` on its standard input; its standard error is the
    /// error when it fails.
    pub async fn run(&self, program: &str, args: &[&str], stdin: &str) -> Result<(), NftError> {
        let command = format!("{program} {}", args.join(" "));
        let spawn = |source| NftError::Spawn {
            command: command.clone(),
            source,
        };
        let mut child = self
            .command(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn)?;
        if let Some(mut input) = child.stdin.take() {
            input.write_all(stdin.as_bytes()).await.map_err(spawn)?;
        }
        let out = child.wait_with_output().await.map_err(spawn)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(NftError::Command {
                command,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// Applies an nftables script in one transaction.
    pub async fn nft(&self, script: &str) -> Result<(), NftError> {
        self.run("nft", &["-f", "-"], script).await
    }

    /// Sets `/proc/sys/<key>` to 1 with the shell (in the namespace, if any).
    pub async fn enable_sysctl(&self, key: &str) -> Result<(), NftError> {
        self.run("sh", &["-c", &format!("echo 1 > /proc/sys/{key}")], "")
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols() {
        assert_eq!(Protocol::parse(None), Some(Protocol::Tcp));
        assert_eq!(Protocol::parse(Some("UDP")).map(Protocol::nft), Some("udp"));
        assert_eq!(Protocol::parse(Some("SCTP")), Some(Protocol::Sctp));
        assert_eq!(
            Protocol::parse(Some("tcp")),
            None,
            "the API's names are upper case"
        );
    }

    #[tokio::test]
    async fn runs_programs_with_stdin_and_reports_their_errors() {
        let r = Runner::host();
        r.run("sh", &["-c", "read x && test \"$x\" = hello"], "hello\n")
            .await
            .expect("stdin reaches the program");
        match r.run("sh", &["-c", "echo broken >&2; exit 3"], "").await {
            Err(NftError::Command { stderr, .. }) => assert_eq!(stderr, "broken"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            r.run("/nonexistent/program", &[], "").await,
            Err(NftError::Spawn { .. })
        ));
    }
}
