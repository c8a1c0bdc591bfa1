//! The add-ons `krust server` runs by default beside the control plane (as k3s ships
//! CoreDNS, Traefik and ServiceLB): cluster DNS, ingress, load balancer and network
//! policy. Each is a library crate; this wires its configuration from the server's flags.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;

/// What the cluster DNS needs from the server's flags.
pub struct DnsArgs {
    /// Where it listens (the advertise address, `--dns-port`).
    pub listen: SocketAddr,
    pub service_cidr: String,
    pub domain: String,
    pub resolv_conf: PathBuf,
}

/// The kube-dns Service's cluster IP: the service CIDR's tenth address, as kubeadm and k3s
/// choose it.
pub fn dns_service_ip(service_cidr: &str) -> anyhow::Result<IpAddr> {
    let base: Ipv4Addr = service_cidr
        .split_once('/')
        .and_then(|(ip, _)| ip.parse().ok())
        .with_context(|| format!("--service-cidr {service_cidr:?} is not an IPv4 CIDR"))?;
    Ok(IpAddr::V4(Ipv4Addr::from(u32::from(base) + 10)))
}

/// Starts the cluster DNS in the background.
pub fn spawn_dns(client: kube::Client, args: DnsArgs) -> anyhow::Result<()> {
    let service_ip = dns_service_ip(&args.service_cidr)?;
    let (path, host) = krust_dns::resolvconf::host_config(&args.resolv_conf)
        .with_context(|| format!("reading {}", args.resolv_conf.display()))?;
    // Never forward to ourselves (a host whose resolv.conf names the cluster DNS).
    let upstreams: Vec<SocketAddr> = krust_dns::resolvconf::upstreams(&host)
        .into_iter()
        .filter(|a| a.ip() != service_ip && *a != args.listen)
        .collect();
    tracing::info!(resolv_conf = %path.display(), ?upstreams, "cluster DNS forwards outside names");
    let advertise = if args.listen.ip().is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        args.listen.ip()
    };
    let config = krust_dns::DnsConfig {
        listen: args.listen,
        advertise,
        service_ip,
        domain: args.domain,
        upstreams,
    };
    tokio::spawn(async move {
        if let Err(e) = krust_dns::run(client, config, super::shutdown_signal()).await {
            tracing::error!(error = %e, "cluster DNS stopped");
        }
    });
    Ok(())
}

/// Starts the ingress controller in the background, on every address.
pub fn spawn_ingress(client: kube::Client, http_port: u16, https_port: u16, publish: Vec<IpAddr>) {
    let config = krust_ingress::IngressConfig {
        http_addr: SocketAddr::from(([0, 0, 0, 0], http_port)),
        https_addr: SocketAddr::from(([0, 0, 0, 0], https_port)),
        publish,
        ..Default::default()
    };
    tokio::spawn(async move {
        if let Err(e) = krust_ingress::run(client, config, super::shutdown_signal()).await {
            tracing::error!(error = %e, "ingress controller stopped");
        }
    });
}

/// Enforces NetworkPolicies for the pods of node `node_name`, in the background.
pub fn spawn_network_policy(client: kube::Client, node_name: String) {
    let backend = std::sync::Arc::new(krust_netpol::backend::nftables::Nftables::new());
    let config = krust_netpol::PolicyConfig {
        node_name: Some(node_name),
        ..Default::default()
    };
    tokio::spawn(async move {
        if let Err(e) = krust_netpol::run(client, backend, config, super::shutdown_signal()).await {
            tracing::error!(error = %e, "network policy enforcement stopped");
        }
    });
}

/// Removes the network policy rules (`krust agent-reset`).
pub async fn cleanup_network_policy() -> anyhow::Result<()> {
    use krust_netpol::backend::PolicyBackend;
    krust_netpol::backend::nftables::Nftables::new()
        .cleanup()
        .await
        .context("removing the network policy rules")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dns_service_ip_is_the_tenth_address() {
        assert_eq!(
            dns_service_ip("10.43.0.0/16").expect("ip"),
            "10.43.0.10".parse::<IpAddr>().expect("ip")
        );
        assert!(dns_service_ip("bogus").is_err());
    }
}
