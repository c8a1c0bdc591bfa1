//! From a Pod to CRI configs: the sandbox config and each container's config (command, env,
//! working dir, resources as cgroup settings, labels that find them again).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod};

use super::volumes::{self, SourceError, Sources};
use crate::labels;
use crate::runtime::api;

/// Which list of the pod spec a container comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Init,
    App,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Init => "init",
            Kind::App => "app",
        }
    }
}

/// CPU period for quotas, in microseconds (upstream's).
const CPU_PERIOD: i64 = 100_000;
const MIN_SHARES: i64 = 2;

/// Parses a Kubernetes quantity to thousandths of a unit (`100m` -> 100, `1` -> 1000,
/// `128Mi` -> 134217728000). `None` if it is not a quantity.
pub fn milli_value(q: &str) -> Option<i128> {
    let q = q.trim();
    let split = q
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let mult: i128 = match suffix {
        "" => 1000,
        "m" => 1,
        "k" => 1_000_000,
        "M" => 1_000_000_000,
        "G" => 1_000_000_000_000,
        "T" => 1_000_000_000_000_000,
        "Ki" => 1024 * 1000,
        "Mi" => 1024 * 1024 * 1000,
        "Gi" => 1024 * 1024 * 1024 * 1000,
        "Ti" => 1024_i128.pow(4) * 1000,
        _ => return None,
    };
    if let Ok(n) = num.parse::<i128>() {
        return n.checked_mul(mult);
    }
    // Decimal or exponent forms: fine to go through f64 for the sizes used here.
    let f: f64 = num.parse().ok()?;
    let v = (f * mult as f64).ceil();
    v.is_finite().then_some(v as i128)
}

fn quantity(c: &Container, which: &str, resource: &str) -> Option<i128> {
    let r = c.resources.as_ref()?;
    let map = match which {
        "limits" => r.limits.as_ref()?,
        _ => r.requests.as_ref()?,
    };
    milli_value(&map.get(resource)?.0)
}

/// The cgroup settings for a container's requests and limits (upstream's mapping: shares
/// from the cpu request, quota from the cpu limit, memory limit in bytes).
pub fn resources(c: &Container) -> api::LinuxContainerResources {
    let cpu_limit = quantity(c, "limits", "cpu");
    // A limit without a request requests the limit (API defaulting does the same).
    let cpu_request = quantity(c, "requests", "cpu").or(cpu_limit);
    let mem_limit = quantity(c, "limits", "memory");
    let shares = match cpu_request {
        Some(m) => i64::try_from(m * 1024 / 1000)
            .unwrap_or(i64::MAX)
            .max(MIN_SHARES),
        None => MIN_SHARES,
    };
    let mut r = api::LinuxContainerResources {
        cpu_shares: shares,
        ..Default::default()
    };
    if let Some(limit) = cpu_limit {
        r.cpu_period = CPU_PERIOD;
        r.cpu_quota = i64::try_from(limit * i128::from(CPU_PERIOD) / 1000)
            .unwrap_or(i64::MAX)
            .max(1000);
    }
    if let Some(bytes) = mem_limit {
        r.memory_limit_in_bytes = i64::try_from(bytes / 1000).unwrap_or(i64::MAX);
    }
    r
}

/// Where the pod's container logs go: `<logs>/<namespace>_<name>_<uid>/`.
pub fn log_directory(logs_root: &Path, pod: &Pod) -> PathBuf {
    logs_root.join(format!(
        "{}_{}_{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.uid.as_deref().unwrap_or("")
    ))
}

/// The cgroup parent of the pod's containers (cgroupfs path).
pub fn cgroup_parent(uid: &str) -> String {
    format!("/krust/pod{uid}")
}

fn pod_labels(pod: &Pod, node: &str) -> HashMap<String, String> {
    let mut l: HashMap<String, String> = pod
        .metadata
        .labels
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    l.insert(
        labels::POD_UID.to_string(),
        pod.metadata.uid.clone().unwrap_or_default(),
    );
    l.insert(
        labels::POD_NAME.to_string(),
        pod.metadata.name.clone().unwrap_or_default(),
    );
    l.insert(
        labels::POD_NAMESPACE.to_string(),
        pod.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string()),
    );
    l.insert(labels::MANAGED.to_string(), "true".to_string());
    l.insert(labels::NODE.to_string(), node.to_string());
    l
}

fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

fn namespace_options(pod: &Pod) -> api::NamespaceOption {
    let spec = pod.spec.as_ref();
    let node = api::NamespaceMode::Node as i32;
    let pod_mode = api::NamespaceMode::Pod as i32;
    api::NamespaceOption {
        network: if host_network(pod) { node } else { pod_mode },
        pid: if spec.and_then(|s| s.host_pid).unwrap_or(false) {
            node
        } else if spec
            .and_then(|s| s.share_process_namespace)
            .unwrap_or(false)
        {
            pod_mode
        } else {
            api::NamespaceMode::Container as i32
        },
        ipc: if spec.and_then(|s| s.host_ipc).unwrap_or(false) {
            node
        } else {
            pod_mode
        },
        ..Default::default()
    }
}

/// The sandbox config of `pod` (attempt `attempt`), logging into `log_dir`.
pub fn sandbox_config(
    pod: &Pod,
    node: &str,
    attempt: u32,
    log_dir: &Path,
) -> api::PodSandboxConfig {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let spec = pod.spec.as_ref();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let hostname = if host_network(pod) {
        String::new()
    } else {
        spec.and_then(|s| s.hostname.clone())
            .unwrap_or_else(|| name.clone())
    };
    let mut port_mappings = Vec::new();
    for c in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
        for p in c.ports.iter().flatten() {
            let Some(host_port) = p.host_port.filter(|h| *h > 0) else {
                continue;
            };
            let protocol = match p.protocol.as_deref() {
                Some("UDP") => api::Protocol::Udp,
                Some("SCTP") => api::Protocol::Sctp,
                _ => api::Protocol::Tcp,
            };
            port_mappings.push(api::PortMapping {
                protocol: protocol as i32,
                container_port: p.container_port,
                host_port,
                host_ip: p.host_ip.clone().unwrap_or_default(),
            });
        }
    }
    let sysctls = spec
        .and_then(|s| s.security_context.as_ref())
        .and_then(|sc| sc.sysctls.as_ref())
        .map(|v| {
            v.iter()
                .map(|s| (s.name.clone(), s.value.clone()))
                .collect()
        })
        .unwrap_or_default();
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name,
            uid: uid.clone(),
            namespace: pod
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".to_string()),
            attempt,
        }),
        hostname,
        log_directory: log_dir.display().to_string(),
        port_mappings,
        labels: pod_labels(pod, node),
        annotations: pod
            .metadata
            .annotations
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent(&uid),
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(pod)),
                ..Default::default()
            }),
            sysctls,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What the agent knows about the pod beyond its spec, for env values from the downward API.
#[derive(Clone, Debug, Default)]
pub struct PodEnvContext {
    pub pod_ip: String,
    pub host_ip: String,
    pub node_name: String,
    /// Service variables ([`super::service_env`]): the lowest precedence, but available to
    /// `$(VAR)` references.
    pub service_env: Vec<(String, String)>,
}

fn field_value(pod: &Pod, path: &str, ctx: &PodEnvContext) -> Option<String> {
    let m = &pod.metadata;
    Some(match path {
        "metadata.name" => m.name.clone()?,
        "metadata.namespace" => m.namespace.clone()?,
        "metadata.uid" => m.uid.clone()?,
        "spec.nodeName" => ctx.node_name.clone(),
        "spec.serviceAccountName" => pod.spec.as_ref()?.service_account_name.clone()?,
        "status.podIP" => ctx.pod_ip.clone(),
        "status.hostIP" => ctx.host_ip.clone(),
        _ => {
            let rest = path
                .strip_prefix("metadata.labels['")
                .map(|r| (r, m.labels.as_ref()))
                .or_else(|| {
                    path.strip_prefix("metadata.annotations['")
                        .map(|r| (r, m.annotations.as_ref()))
                })?;
            let key = rest.0.strip_suffix("']")?;
            rest.1?.get(key)?.clone()
        }
    })
}

/// Expands `$(VAR)` references to earlier variables; `$$` escapes; unknown ones stay as is.
pub fn expand(s: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match vars.get(name) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The container's environment: Service variables first, then `envFrom` sources, then each
/// `env` entry (literal values, downward API fields, ConfigMap and Secret keys), later ones
/// overriding earlier ones, with `$(VAR)` references to earlier variables expanded.
pub fn env(
    pod: &Pod,
    c: &Container,
    ctx: &PodEnvContext,
    sources: &Sources,
) -> Result<Vec<(String, String)>, SourceError> {
    let (from, values) = volumes::source_env(pod, c, sources)?;
    let mut vars: HashMap<String, String> = HashMap::new();
    let mut out: Vec<(String, String)> = Vec::new();
    fn set(
        vars: &mut HashMap<String, String>,
        out: &mut Vec<(String, String)>,
        name: &str,
        v: String,
    ) {
        vars.insert(name.to_string(), v.clone());
        out.retain(|(k, _)| k != name);
        out.push((name.to_string(), v));
    }
    for (k, v) in ctx.service_env.iter().cloned().chain(from) {
        set(&mut vars, &mut out, &k, v);
    }
    let items: &[EnvVar] = c.env.as_deref().unwrap_or_default();
    for (i, e) in items.iter().enumerate() {
        let value = if let Some(v) = &e.value {
            Some(expand(v, &vars))
        } else if let Some(f) = e.value_from.as_ref().and_then(|f| f.field_ref.as_ref()) {
            field_value(pod, &f.field_path, ctx)
        } else if e.value_from.is_none() {
            Some(String::new())
        } else {
            values.get(i).cloned().flatten()
        };
        if let Some(v) = value {
            set(&mut vars, &mut out, &e.name, v);
        }
    }
    Ok(out)
}

/// The container config of container `c` (`kind`, restart `attempt`).
pub fn container_config(
    pod: &Pod,
    c: &Container,
    kind: Kind,
    attempt: u32,
    ctx: &PodEnvContext,
    sources: &Sources,
    mounts: Vec<api::Mount>,
) -> Result<api::ContainerConfig, SourceError> {
    let node = ctx.node_name.as_str();
    let env = env(pod, c, ctx, sources)?;
    let vars: HashMap<String, String> = env.iter().cloned().collect();
    let expand_all = |v: &Option<Vec<String>>| -> Vec<String> {
        v.iter().flatten().map(|s| expand(s, &vars)).collect()
    };
    let mut labels = HashMap::from([
        (
            labels::POD_UID.to_string(),
            pod.metadata.uid.clone().unwrap_or_default(),
        ),
        (
            labels::POD_NAME.to_string(),
            pod.metadata.name.clone().unwrap_or_default(),
        ),
        (
            labels::POD_NAMESPACE.to_string(),
            pod.metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".to_string()),
        ),
        (labels::CONTAINER_NAME.to_string(), c.name.clone()),
        (labels::MANAGED.to_string(), "true".to_string()),
    ]);
    labels.insert(labels::NODE.to_string(), node.to_string());
    let grace = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30);
    let sc = c.security_context.as_ref();
    Ok(api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: c.name.clone(),
            attempt,
        }),
        image: Some(api::ImageSpec {
            image: c.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command: expand_all(&c.command),
        args: expand_all(&c.args),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: env
            .into_iter()
            .map(|(key, value)| api::KeyValue { key, value })
            .collect(),
        mounts,
        labels,
        annotations: HashMap::from([
            (labels::RESTART_COUNT.to_string(), attempt.to_string()),
            (labels::GRACE_PERIOD.to_string(), grace.to_string()),
            (
                labels::CONTAINER_KIND.to_string(),
                kind.as_str().to_string(),
            ),
        ]),
        log_path: format!("{}/{attempt}.log", c.name),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(api::LinuxContainerConfig {
            resources: Some(resources(c)),
            security_context: Some(api::LinuxContainerSecurityContext {
                privileged: sc.and_then(|s| s.privileged).unwrap_or(false),
                namespace_options: Some(namespace_options(pod)),
                run_as_user: sc
                    .and_then(|s| s.run_as_user)
                    .map(|value| api::Int64Value { value }),
                run_as_group: sc
                    .and_then(|s| s.run_as_group)
                    .map(|value| api::Int64Value { value }),
                readonly_rootfs: sc
                    .and_then(|s| s.read_only_root_filesystem)
                    .unwrap_or(false),
                ..Default::default()
            }),
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EnvVarSource, ObjectFieldSelector, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use std::collections::BTreeMap;

    #[test]
    fn quantities() {
        assert_eq!(milli_value("100m"), Some(100));
        assert_eq!(milli_value("2"), Some(2000));
        assert_eq!(milli_value("0.5"), Some(500));
        assert_eq!(milli_value("32Mi"), Some(32 * 1024 * 1024 * 1000));
        assert_eq!(milli_value("1G"), Some(1_000_000_000_000));
        assert_eq!(milli_value("bogus"), None);
    }

    fn container_with(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        let map = |v: &[(&str, &str)]| {
            (!v.is_empty()).then(|| {
                v.iter()
                    .map(|(k, q)| (k.to_string(), Quantity(q.to_string())))
                    .collect::<BTreeMap<_, _>>()
            })
        };
        Container {
            name: "c".to_string(),
            resources: Some(ResourceRequirements {
                requests: map(requests),
                limits: map(limits),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn cgroup_settings() {
        let r = resources(&container_with(
            &[("cpu", "250m")],
            &[("cpu", "500m"), ("memory", "32Mi")],
        ));
        assert_eq!(r.cpu_shares, 256);
        assert_eq!((r.cpu_period, r.cpu_quota), (100_000, 50_000));
        assert_eq!(r.memory_limit_in_bytes, 32 * 1024 * 1024);
        let none = resources(&container_with(&[], &[]));
        assert_eq!(none.cpu_shares, 2);
        assert_eq!((none.cpu_quota, none.memory_limit_in_bytes), (0, 0));
        let limit_only = resources(&container_with(&[], &[("cpu", "1")]));
        assert_eq!(limit_only.cpu_shares, 1024);
    }

    #[test]
    fn env_and_expansion() {
        let pod = Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("web".to_string()),
                namespace: Some("ns1".to_string()),
                uid: Some("u1".to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        let field = |p: &str| {
            Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: p.to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        let c = Container {
            name: "c".to_string(),
            env: Some(vec![
                EnvVar {
                    name: "NAME".to_string(),
                    value_from: field("metadata.name"),
                    ..Default::default()
                },
                EnvVar {
                    name: "IP".to_string(),
                    value_from: field("status.podIP"),
                    ..Default::default()
                },
                EnvVar {
                    name: "GREETING".to_string(),
                    value: Some("hi $(NAME) $(MISSING) $$(NAME)".to_string()),
                    ..Default::default()
                },
            ]),
            args: Some(vec!["echo $(GREETING)".to_string()]),
            ..Default::default()
        };
        let ctx = PodEnvContext {
            pod_ip: "10.42.0.5".to_string(),
            node_name: "n1".to_string(),
            ..Default::default()
        };
        let cfg = container_config(&pod, &c, Kind::App, 2, &ctx, &Sources::default(), vec![])
            .expect("config");
        let env: Vec<(String, String)> = cfg
            .envs
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone()))
            .collect();
        assert_eq!(
            env,
            [
                ("NAME".to_string(), "web".to_string()),
                ("IP".to_string(), "10.42.0.5".to_string()),
                (
                    "GREETING".to_string(),
                    "hi web $(MISSING) $(NAME)".to_string()
                ),
            ]
        );
        assert_eq!(cfg.args, ["echo hi web $(MISSING) $(NAME)"]);
        assert_eq!(cfg.log_path, "c/2.log");
        assert_eq!(cfg.metadata.as_ref().map(|m| m.attempt), Some(2));
        assert_eq!(cfg.labels[labels::POD_UID], "u1");
        assert_eq!(cfg.annotations[labels::RESTART_COUNT], "2");
    }

    #[test]
    fn service_variables_yield_to_the_containers_own_and_expand() {
        let pod = Pod::default();
        let c = Container {
            name: "c".into(),
            env: Some(vec![
                EnvVar {
                    name: "KUBERNETES_SERVICE_PORT".into(),
                    value: Some("8443".into()),
                    ..Default::default()
                },
                EnvVar {
                    name: "API".into(),
                    value: Some(
                        "https://$(KUBERNETES_SERVICE_HOST):$(KUBERNETES_SERVICE_PORT)".into(),
                    ),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let ctx = PodEnvContext {
            service_env: vec![
                ("KUBERNETES_SERVICE_HOST".into(), "10.43.0.1".into()),
                ("KUBERNETES_SERVICE_PORT".into(), "443".into()),
            ],
            ..Default::default()
        };
        let env = env(&pod, &c, &ctx, &Sources::default()).expect("env");
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.43.0.1"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("8443"));
        assert_eq!(get("API"), Some("https://10.43.0.1:8443"));
    }
}
