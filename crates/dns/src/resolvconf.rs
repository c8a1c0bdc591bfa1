//! `resolv.conf`: reading the host's (for the servers cluster DNS forwards to, and the
//! search path pods inherit) and writing a pod's.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// systemd-resolved's list of the real upstream servers, used when `/etc/resolv.conf` names
/// only its local stub (127.0.0.53): forwarding to the stub from a pod's point of view
/// would loop or go nowhere.
pub const SYSTEMD_RESOLVED_UPSTREAMS: &str = "/run/systemd/resolve/resolv.conf";

/// What a resolv.conf says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Parses resolv.conf text; unknown lines are ignored, as the C library does.
    pub fn parse(text: &str) -> ResolvConf {
        let mut out = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    if let Some(ip) = words.next().and_then(|w| w.parse().ok()) {
                        out.nameservers.push(ip);
                    }
                }
                // The last search (or domain) line wins.
                Some("search") | Some("domain") => {
                    out.search = words.map(str::to_string).collect();
                }
                Some("options") => out.options.extend(words.map(str::to_string)),
                _ => {}
            }
        }
        out
    }

    /// Reads `path`; a missing file is an empty configuration.
    pub fn read(path: &Path) -> std::io::Result<ResolvConf> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(ResolvConf::parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ResolvConf::default()),
            Err(e) => Err(e),
        }
    }

    /// The text of this configuration.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for ns in &self.nameservers {
            out.push_str(&format!("nameserver {ns}\n"));
        }
        if !self.search.is_empty() {
            out.push_str(&format!("search {}\n", self.search.join(" ")));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

/// systemd-resolved's stub listener.
const RESOLVED_STUB: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 53));

/// Whether `ip` is systemd-resolved's local stub (other loopback servers, a dnsmasq on
/// 127.0.0.1 say, are real resolvers the cluster DNS can forward to).
fn is_stub(ip: &IpAddr) -> bool {
    *ip == RESOLVED_STUB
}

/// The host's resolver configuration for forwarding and for pods: `path`, or, when it names
/// only a local stub, systemd-resolved's upstream file if there is one.
pub fn host_config(path: &Path) -> std::io::Result<(PathBuf, ResolvConf)> {
    let conf = ResolvConf::read(path)?;
    if !conf.nameservers.is_empty() && conf.nameservers.iter().all(is_stub) {
        let real = Path::new(SYSTEMD_RESOLVED_UPSTREAMS);
        let upstream = ResolvConf::read(real)?;
        if !upstream.nameservers.is_empty() {
            return Ok((real.to_path_buf(), upstream));
        }
    }
    Ok((path.to_path_buf(), conf))
}

/// The upstream servers to forward to from a resolv.conf's nameservers, on port 53.
pub fn upstreams(conf: &ResolvConf) -> Vec<SocketAddr> {
    conf.nameservers
        .iter()
        .map(|ip| SocketAddr::new(*ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders() {
        let c = ResolvConf::parse(
            "# generated\nnameserver 10.0.0.2\nnameserver bogus\nnameserver 10.0.0.3 # two\n\
             domain old.example\nsearch corp.example example.com\noptions ndots:2 edns0\n",
        );
        assert_eq!(
            c.nameservers,
            vec![
                "10.0.0.2".parse::<IpAddr>().expect("ip"),
                "10.0.0.3".parse().expect("ip")
            ]
        );
        assert_eq!(c.search, vec!["corp.example", "example.com"]);
        assert_eq!(c.options, vec!["ndots:2", "edns0"]);
        assert_eq!(
            c.render(),
            "nameserver 10.0.0.2\nnameserver 10.0.0.3\nsearch corp.example example.com\n\
             options ndots:2 edns0\n"
        );
        assert_eq!(ResolvConf::parse(""), ResolvConf::default());
    }

    #[test]
    fn stub_only_configurations_fall_back_to_the_real_upstreams() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "nameserver 192.0.2.53\n").expect("write");
        let (path, conf) = host_config(&plain).expect("read");
        assert_eq!(path, plain);
        assert_eq!(
            upstreams(&conf),
            vec!["192.0.2.53:53".parse().expect("addr")]
        );
        let stub = dir.path().join("stub");
        std::fs::write(&stub, "nameserver 127.0.0.53\nsearch lan\n").expect("write");
        let (path, conf) = host_config(&stub).expect("read");
        if Path::new(SYSTEMD_RESOLVED_UPSTREAMS).exists() {
            assert_eq!(path, Path::new(SYSTEMD_RESOLVED_UPSTREAMS));
        } else {
            assert_eq!((path, conf.search), (stub, vec!["lan".to_string()]));
        }
        let missing = dir.path().join("missing");
        assert_eq!(
            host_config(&missing).expect("read").1,
            ResolvConf::default()
        );
    }
}
