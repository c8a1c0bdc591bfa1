//! What a pod's containers read besides their image: environment values from ConfigMaps and
//! Secrets, and volumes (emptyDir, hostPath, configMap, secret; downwardAPI and projected
//! from `projection`; persistentVolumeClaim from `claims`) as bind mounts.
//!
//! Volume contents live under `<volumes root>/<pod uid>/<volume name>/`; configMap, secret,
//! downwardAPI and projected volumes are (re)written before each container start, so a
//! restarted container sees the current data, and when a projected token is due for
//! refresh. Each file is replaced by a rename, so a reader never sees half a file. They go
//! when the pod goes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Container, KeyToPath, Pod, Secret, Volume};
use kube::Api;

use super::projection;
use crate::runtime::api;

/// The ConfigMaps and Secrets a pod refers to, as fetched (`None`: not found).
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub config_maps: HashMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    pub secrets: HashMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    /// Service account tokens for projected volumes, by audience and lifetime.
    pub tokens: BTreeMap<projection::TokenKey, projection::Token>,
    /// The host volume of each `persistentVolumeClaim` volume, by volume name, once its claim
    /// is bound (see `claims`).
    pub claims: HashMap<String, Prepared>,
}

/// Why a container's config cannot be made (upstream's `CreateContainerConfigError`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("{kind} \"{name}\" not found")]
    Missing { kind: &'static str, name: String },
    #[error("couldn't find key {key} in {kind} {namespace}/{name}")]
    MissingKey {
        kind: &'static str,
        namespace: String,
        name: String,
        key: String,
    },
    #[error("volume {volume}: {message}")]
    Volume { volume: String, message: String },
}

fn config_map_data(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut d: BTreeMap<String, Vec<u8>> = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    for (k, v) in cm.binary_data.iter().flatten() {
        d.insert(k.clone(), v.0.clone());
    }
    d
}

fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut d: BTreeMap<String, Vec<u8>> = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in s.string_data.iter().flatten() {
        d.insert(k.clone(), v.clone().into_bytes());
    }
    d
}

/// Names of the ConfigMaps and Secrets the pod's env and volumes refer to.
pub fn referenced(pod: &Pod) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut cms = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    let Some(spec) = pod.spec.as_ref() else {
        return (cms, secrets);
    };
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
    {
        for e in c.env.iter().flatten() {
            if let Some(f) = e.value_from.as_ref() {
                if let Some(r) = &f.config_map_key_ref {
                    cms.insert(r.name.clone());
                }
                if let Some(r) = &f.secret_key_ref {
                    secrets.insert(r.name.clone());
                }
            }
        }
        for e in c.env_from.iter().flatten() {
            if let Some(r) = &e.config_map_ref {
                cms.insert(r.name.clone());
            }
            if let Some(r) = &e.secret_ref {
                secrets.insert(r.name.clone());
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            cms.insert(cm.name.clone());
        }
        if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            secrets.insert(s);
        }
    }
    projection::referenced(pod, &mut cms, &mut secrets);
    (cms, secrets)
}

/// Fetches what the pod refers to.
pub async fn fetch(client: &kube::Client, pod: &Pod) -> Result<Sources, kube::Error> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let (cms, secrets) = referenced(pod);
    let mut out = Sources::default();
    let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    for name in cms {
        let cm = cm_api.get_opt(&name).await?;
        out.config_maps
            .insert(name, cm.as_ref().map(config_map_data));
    }
    let secret_api: Api<Secret> = Api::namespaced(client.clone(), ns);
    for name in secrets {
        let s = secret_api.get_opt(&name).await?;
        out.secrets.insert(name, s.as_ref().map(secret_data));
    }
    out.tokens = projection::fetch_tokens(client, pod).await?;
    Ok(out)
}

impl Sources {
    pub(crate) fn data(
        &self,
        kind: &'static str,
        name: &str,
    ) -> Result<&BTreeMap<String, Vec<u8>>, SourceError> {
        let found = match kind {
            "configmap" => self.config_maps.get(name),
            _ => self.secrets.get(name),
        };
        found
            .and_then(|d| d.as_ref())
            .ok_or_else(|| SourceError::Missing {
                kind,
                name: name.to_string(),
            })
    }
}

/// Variables from `envFrom` sources, and the value of each `env` entry that has one from a
/// ConfigMap or Secret.
pub type SourceEnv = (Vec<(String, String)>, Vec<Option<String>>);

/// Environment variables from `envFrom` and from `configMapKeyRef`/`secretKeyRef` values, in
/// the order upstream applies them: `envFrom` first (prefixed), then each `env` entry.
/// Entries of `env` with other sources come back as `None` for the caller to fill.
pub fn source_env(pod: &Pod, c: &Container, sources: &Sources) -> Result<SourceEnv, SourceError> {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let mut from = Vec::new();
    for e in c.env_from.iter().flatten() {
        let prefix = e.prefix.clone().unwrap_or_default();
        let (kind, name, optional) = match (&e.config_map_ref, &e.secret_ref) {
            (Some(r), _) => ("configmap", r.name.clone(), r.optional.unwrap_or(false)),
            (None, Some(r)) => ("secret", r.name.clone(), r.optional.unwrap_or(false)),
            (None, None) => continue,
        };
        match sources.data(kind, &name) {
            Ok(d) => {
                for (k, v) in d {
                    from.push((
                        format!("{prefix}{k}"),
                        String::from_utf8_lossy(v).into_owned(),
                    ));
                }
            }
            Err(_) if optional => {}
            Err(e) => return Err(e),
        }
    }
    let mut values = Vec::new();
    for e in c.env.iter().flatten() {
        let Some(f) = e.value_from.as_ref() else {
            values.push(None);
            continue;
        };
        let (kind, name, key, optional) = match (&f.config_map_key_ref, &f.secret_key_ref) {
            (Some(r), _) => (
                "configmap",
                r.name.clone(),
                r.key.clone(),
                r.optional.unwrap_or(false),
            ),
            (None, Some(r)) => (
                "secret",
                r.name.clone(),
                r.key.clone(),
                r.optional.unwrap_or(false),
            ),
            (None, None) => {
                values.push(None);
                continue;
            }
        };
        let value = match sources.data(kind, &name) {
            Ok(d) => match d.get(&key) {
                Some(v) => Some(String::from_utf8_lossy(v).into_owned()),
                None if optional => Some(String::new()),
                None => {
                    return Err(SourceError::MissingKey {
                        kind: if kind == "configmap" {
                            "ConfigMap"
                        } else {
                            "Secret"
                        },
                        namespace: ns,
                        name,
                        key,
                    })
                }
            },
            Err(_) if optional => Some(String::new()),
            Err(e) => return Err(e),
        };
        values.push(value);
    }
    Ok((from, values))
}

/// A file of a configMap or secret volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeFile {
    pub path: PathBuf,
    pub data: Vec<u8>,
    pub mode: u32,
}

impl VolumeFile {
    /// The file an `items` entry asks for: its path (which must stay inside the volume) and
    /// its own mode, else the volume's default.
    pub(crate) fn item(
        path: &str,
        data: Vec<u8>,
        mode: Option<i32>,
        default_mode: u32,
    ) -> Result<VolumeFile, String> {
        Ok(VolumeFile {
            path: safe_relative(path).ok_or_else(|| format!("bad path {path:?}"))?,
            data,
            mode: mode
                .and_then(|m| u32::try_from(m).ok())
                .unwrap_or(default_mode),
        })
    }
}

/// A relative path that stays inside the volume.
pub(crate) fn safe_relative(p: &str) -> Option<PathBuf> {
    let path = Path::new(p);
    path.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| path.to_path_buf())
}

pub(crate) fn files_of(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: u32,
    volume: &str,
) -> Result<Vec<VolumeFile>, SourceError> {
    let bad = |message: String| SourceError::Volume {
        volume: volume.to_string(),
        message,
    };
    match items {
        None => data
            .iter()
            .map(|(k, v)| {
                Ok(VolumeFile {
                    path: safe_relative(k).ok_or_else(|| bad(format!("bad key {k:?}")))?,
                    data: v.clone(),
                    mode: default_mode,
                })
            })
            .collect(),
        Some(items) => items
            .iter()
            .map(|it| {
                let v = data
                    .get(&it.key)
                    .ok_or_else(|| bad(format!("no key {:?}", it.key)))?;
                VolumeFile::item(&it.path, v.clone(), it.mode, default_mode).map_err(bad)
            })
            .collect(),
    }
}

/// What a volume is on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prepared {
    /// A directory the agent fills (emptyDir, configMap, secret): its files, if any.
    Dir(Vec<VolumeFile>),
    /// A path of the host (hostPath), created first as a directory or file if asked.
    Host {
        path: PathBuf,
        create: Option<&'static str>,
    },
}

/// A hostPath volume (inline, or a claim's PersistentVolume): the `type`s that create the
/// path say so.
pub(crate) fn host_path(h: &k8s_openapi::api::core::v1::HostPathVolumeSource) -> Prepared {
    let create = match h.type_.as_deref() {
        Some("DirectoryOrCreate") => Some("dir"),
        Some("FileOrCreate") => Some("file"),
        _ => None,
    };
    Prepared::Host {
        path: PathBuf::from(&h.path),
        create,
    }
}

/// What each of the pod's volumes should be, from the fetched sources. `plan_volume` needs
/// the pod for downward API values.
pub fn plan_volumes(pod: &Pod, sources: &Sources) -> Result<Vec<(String, Prepared)>, SourceError> {
    let mut out = Vec::new();
    for v in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
    {
        out.push((v.name.clone(), plan_volume(pod, v, sources)?));
    }
    Ok(out)
}

fn plan_volume(pod: &Pod, v: &Volume, sources: &Sources) -> Result<Prepared, SourceError> {
    let mode =
        |m: Option<i32>, default: u32| m.and_then(|m| u32::try_from(m).ok()).unwrap_or(default);
    if let Some(cm) = &v.config_map {
        return match sources.data("configmap", &cm.name) {
            Ok(d) => Ok(Prepared::Dir(files_of(
                d,
                cm.items.as_ref(),
                mode(cm.default_mode, 0o644),
                &v.name,
            )?)),
            Err(_) if cm.optional.unwrap_or(false) => Ok(Prepared::Dir(Vec::new())),
            Err(e) => Err(e),
        };
    }
    if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        return match sources.data("secret", &name) {
            Ok(d) => Ok(Prepared::Dir(files_of(
                d,
                s.items.as_ref(),
                mode(s.default_mode, 0o644),
                &v.name,
            )?)),
            Err(_) if s.optional.unwrap_or(false) => Ok(Prepared::Dir(Vec::new())),
            Err(e) => Err(e),
        };
    }
    if let Some(h) = &v.host_path {
        return Ok(host_path(h));
    }
    if v.empty_dir.is_some() {
        return Ok(Prepared::Dir(Vec::new()));
    }
    if v.persistent_volume_claim.is_some() {
        return sources
            .claims
            .get(&v.name)
            .cloned()
            .ok_or_else(|| SourceError::Volume {
                volume: v.name.clone(),
                message: "its claim is not bound yet".to_string(),
            });
    }
    if let Some(d) = &v.downward_api {
        return projection::downward_api(pod, d, &v.name).map(Prepared::Dir);
    }
    if let Some(p) = &v.projected {
        return projection::projected(pod, p, sources, &v.name).map(Prepared::Dir);
    }
    Err(SourceError::Volume {
        volume: v.name.clone(),
        message: "this volume type is not supported by the krust agent yet".to_string(),
    })
}

/// Makes the volumes exist under `root` (`<volumes root>/<uid>`); returns each volume's host
/// path.
pub fn prepare(
    root: &Path,
    volumes: &[(String, Prepared)],
) -> Result<HashMap<String, PathBuf>, SourceError> {
    let mut paths = HashMap::new();
    for (name, p) in volumes {
        let io = |e: std::io::Error| SourceError::Volume {
            volume: name.clone(),
            message: e.to_string(),
        };
        match p {
            Prepared::Dir(files) => {
                let dir = root.join(name);
                std::fs::create_dir_all(&dir).map_err(io)?;
                for f in files {
                    let path = dir.join(&f.path);
                    if let Some(parent) = path.parent() {
                        std::fs::create_dir_all(parent).map_err(io)?;
                    }
                    write_atomic(&path, &f.data, f.mode).map_err(io)?;
                }
                paths.insert(name.clone(), dir);
            }
            Prepared::Host { path, create } => {
                match create {
                    Some("dir") => std::fs::create_dir_all(path).map_err(io)?,
                    Some(_) if !path.exists() => {
                        if let Some(parent) = path.parent() {
                            std::fs::create_dir_all(parent).map_err(io)?;
                        }
                        std::fs::write(path, b"").map_err(io)?;
                    }
                    _ => {}
                }
                paths.insert(name.clone(), path.clone());
            }
        }
    }
    Ok(paths)
}

/// Replaces `path` with `data` by a rename, so a container never reads half a file.
fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{}.tmp", name.unwrap_or_default()));
    std::fs::write(&tmp, data)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path)
}

/// The CRI mounts of container `c`, given each volume's host path.
pub fn mounts(
    c: &Container,
    paths: &HashMap<String, PathBuf>,
    read_only_volumes: &BTreeSet<String>,
) -> Result<Vec<api::Mount>, SourceError> {
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let host = paths.get(&m.name).ok_or_else(|| SourceError::Volume {
            volume: m.name.clone(),
            message: "no such volume".to_string(),
        })?;
        let host = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => host.join(safe_relative(sub).ok_or_else(|| SourceError::Volume {
                volume: m.name.clone(),
                message: format!("bad subPath {sub:?}"),
            })?),
            None => host.clone(),
        };
        out.push(api::Mount {
            container_path: m.mount_path.clone(),
            host_path: host.display().to_string(),
            readonly: m.read_only.unwrap_or(false) || read_only_volumes.contains(&m.name),
            ..Default::default()
        });
    }
    Ok(out)
}

/// Volumes that are mounted read-only whatever the mount says (configMap, secret,
/// downwardAPI, projected, and claims with `readOnly`).
pub fn read_only_volumes(pod: &Pod) -> BTreeSet<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter(|v| {
            v.config_map.is_some()
                || v.secret.is_some()
                || v.downward_api.is_some()
                || v.projected.is_some()
                || v.persistent_volume_claim
                    .as_ref()
                    .is_some_and(|c| c.read_only == Some(true))
        })
        .map(|v| v.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, ConfigMapVolumeSource, EnvFromSource, EnvVar,
        EnvVarSource, PodSpec, SecretKeySelector, SecretVolumeSource, VolumeMount,
    };

    fn sources() -> Sources {
        let mut s = Sources::default();
        s.config_maps.insert(
            "cfg".to_string(),
            Some(BTreeMap::from([
                ("a".to_string(), b"1".to_vec()),
                ("b".to_string(), b"2".to_vec()),
            ])),
        );
        s.config_maps.insert("gone".to_string(), None);
        s.secrets.insert(
            "sec".to_string(),
            Some(BTreeMap::from([(
                "password".to_string(),
                b"hunter2".to_vec(),
            )])),
        );
        s
    }

    fn pod_with(c: Container, volumes: Vec<Volume>) -> Pod {
        Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("p".to_string()),
                namespace: Some("ns".to_string()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![c],
                volumes: Some(volumes),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn env_from_configmaps_and_secrets() {
        let c = Container {
            name: "c".to_string(),
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "cfg".to_string(),
                    optional: None,
                }),
                prefix: Some("CFG_".to_string()),
                ..Default::default()
            }]),
            env: Some(vec![
                EnvVar {
                    name: "PLAIN".to_string(),
                    value: Some("x".to_string()),
                    ..Default::default()
                },
                EnvVar {
                    name: "PASSWORD".to_string(),
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: "sec".to_string(),
                            key: "password".to_string(),
                            optional: None,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let pod = pod_with(c.clone(), vec![]);
        let (from, values) = source_env(&pod, &c, &sources()).expect("env");
        assert_eq!(
            from,
            [
                ("CFG_a".to_string(), "1".to_string()),
                ("CFG_b".to_string(), "2".to_string())
            ]
        );
        assert_eq!(values, [None, Some("hunter2".to_string())]);

        let missing_key = Container {
            name: "c".to_string(),
            env: Some(vec![EnvVar {
                name: "X".to_string(),
                value_from: Some(EnvVarSource {
                    config_map_key_ref: Some(ConfigMapKeySelector {
                        name: "cfg".to_string(),
                        key: "nope".to_string(),
                        optional: None,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let err = source_env(&pod, &missing_key, &sources()).expect_err("missing key");
        assert_eq!(
            err.to_string(),
            "couldn't find key nope in ConfigMap ns/cfg"
        );
    }

    #[test]
    fn configmap_and_secret_volumes() {
        let c = Container {
            name: "c".to_string(),
            volume_mounts: Some(vec![
                VolumeMount {
                    name: "cfg".to_string(),
                    mount_path: "/etc/cfg".to_string(),
                    ..Default::default()
                },
                VolumeMount {
                    name: "scratch".to_string(),
                    mount_path: "/scratch".to_string(),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let volumes = vec![
            Volume {
                name: "cfg".to_string(),
                config_map: Some(ConfigMapVolumeSource {
                    name: "cfg".to_string(),
                    items: Some(vec![KeyToPath {
                        key: "a".to_string(),
                        path: "sub/a.txt".to_string(),
                        mode: Some(0o600),
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "sec".to_string(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some("sec".to_string()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "scratch".to_string(),
                empty_dir: Some(Default::default()),
                ..Default::default()
            },
        ];
        let pod = pod_with(c.clone(), volumes);
        let planned = plan_volumes(&pod, &sources()).expect("volumes");
        assert_eq!(
            planned[0].1,
            Prepared::Dir(vec![VolumeFile {
                path: PathBuf::from("sub/a.txt"),
                data: b"1".to_vec(),
                mode: 0o600
            }])
        );
        let tmp = tempfile::tempdir().expect("tmp");
        let paths = prepare(tmp.path(), &planned).expect("prepare");
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("cfg/sub/a.txt")).expect("file"),
            "1"
        );
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("sec/password")).expect("file"),
            "hunter2"
        );
        let m = mounts(&c, &paths, &read_only_volumes(&pod)).expect("mounts");
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].container_path, "/etc/cfg");
        assert!(m[0].readonly, "configMap volumes are read-only");
        assert!(!m[1].readonly);

        let missing = pod_with(
            c,
            vec![Volume {
                name: "cfg".to_string(),
                config_map: Some(ConfigMapVolumeSource {
                    name: "gone".to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
        );
        assert_eq!(
            plan_volumes(&missing, &sources()),
            Err(SourceError::Missing {
                kind: "configmap",
                name: "gone".to_string()
            })
        );
        assert!(safe_relative("../etc/passwd").is_none());
    }
}
