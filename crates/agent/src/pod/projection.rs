//! The volumes whose files the agent computes rather than copies: `downwardAPI` (the pod's
//! own metadata and its containers' resources, as upstream's `pkg/volume/downwardapi`) and
//! `projected` (several sources in one directory, as `pkg/volume/projected`), including
//! service account tokens the agent requests for the pod (TokenRequest bound to the pod's
//! name and uid) and refreshes before 80% of their lifetime has passed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    DownwardAPIVolumeFile, Pod, ProjectedVolumeSource, ServiceAccount,
};
use kube::api::PostParams;
use kube::Api;

use super::spec::milli_value;
use super::volumes::{files_of, safe_relative, SourceError, Sources, VolumeFile};

/// Upstream's default lifetime of a projected token.
const DEFAULT_TOKEN_SECONDS: i64 = 3600;
/// The audience and lifetime a projected token source asks for; tokens are requested once
/// per distinct pair.
pub type TokenKey = (String, i64);

/// A token the API server issued for the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub token: String,
    pub issued: SystemTime,
    pub expires: SystemTime,
}

impl Token {
    /// When the token should be replaced: after 80% of its lifetime, as the kubelet does.
    pub fn refresh_at(&self) -> SystemTime {
        let life = self
            .expires
            .duration_since(self.issued)
            .unwrap_or(Duration::ZERO);
        self.issued + life.mul_f64(0.8)
    }
}

fn token_key(audience: Option<&str>, seconds: Option<i64>) -> TokenKey {
    (
        audience.unwrap_or_default().to_string(),
        seconds.unwrap_or(DEFAULT_TOKEN_SECONDS),
    )
}

/// The token sources of the pod's projected volumes.
pub fn token_keys(pod: &Pod) -> Vec<TokenKey> {
    let mut keys: Vec<TokenKey> = projected_sources(pod)
        .filter_map(|p| p.service_account_token.as_ref())
        .map(|t| token_key(t.audience.as_deref(), t.expiration_seconds))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn projected_sources(
    pod: &Pod,
) -> impl Iterator<Item = &k8s_openapi::api::core::v1::VolumeProjection> {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|v| v.projected.as_ref())
        .flat_map(|p| p.sources.iter().flatten())
}

/// Names of the ConfigMaps and Secrets the pod's projected volumes read.
pub fn referenced(
    pod: &Pod,
    cms: &mut std::collections::BTreeSet<String>,
    secrets: &mut std::collections::BTreeSet<String>,
) {
    for s in projected_sources(pod) {
        if let Some(cm) = &s.config_map {
            cms.insert(cm.name.clone());
        }
        if let Some(sec) = &s.secret {
            secrets.insert(sec.name.clone());
        }
    }
}

/// Requests a token for each of the pod's projected token sources, bound to the pod.
pub async fn fetch_tokens(
    client: &kube::Client,
    pod: &Pod,
) -> Result<BTreeMap<TokenKey, Token>, kube::Error> {
    let mut out = BTreeMap::new();
    let keys = token_keys(pod);
    if keys.is_empty() {
        return Ok(out);
    }
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".to_string());
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    for (audience, seconds) in keys {
        let req = TokenRequest {
            spec: TokenRequestSpec {
                audiences: if audience.is_empty() {
                    Vec::new()
                } else {
                    vec![audience.clone()]
                },
                expiration_seconds: Some(seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".to_string()),
                    kind: Some("Pod".to_string()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
            },
            ..Default::default()
        };
        let issued = SystemTime::now();
        let resp = api
            .create_token_request(&sa, &PostParams::default(), &req)
            .await?;
        // Without a status there is no token: the volume reports it when it is made.
        let Some(status) = resp.status else {
            continue;
        };
        let expires = std::time::UNIX_EPOCH
            + Duration::from_secs(
                u64::try_from(status.expiration_timestamp.0.as_second()).unwrap_or(0),
            );
        out.insert(
            (audience, seconds),
            Token {
                token: status.token,
                issued,
                expires,
            },
        );
    }
    Ok(out)
}

/// When the earliest of `tokens` should be refreshed.
pub fn next_refresh(tokens: &BTreeMap<TokenKey, Token>) -> Option<SystemTime> {
    tokens.values().map(Token::refresh_at).min()
}

/// Upstream's `fieldpath.FormatMap`: sorted `key="value"` lines.
fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", serde_json::Value::String(v.clone())))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of a downward API `fieldRef` in a volume.
fn field_value(pod: &Pod, path: &str) -> Option<String> {
    let m = &pod.metadata;
    Some(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(m.labels.as_ref()),
        "metadata.annotations" => format_map(m.annotations.as_ref()),
        _ => {
            let (rest, map) = path
                .strip_prefix("metadata.labels['")
                .map(|r| (r, m.labels.as_ref()))
                .or_else(|| {
                    path.strip_prefix("metadata.annotations['")
                        .map(|r| (r, m.annotations.as_ref()))
                })?;
            let key = rest.strip_suffix("']")?;
            map.and_then(|m| m.get(key)).cloned().unwrap_or_default()
        }
    })
}

/// The value of a `resourceFieldRef` (`limits.cpu`, `requests.memory`, ...) of container
/// `name`, divided by `divisor` and rounded up as upstream does. A limit that is not set
/// falls back to the request (upstream falls back to the node's allocatable, which the
/// agent does not compute yet).
fn resource_value(
    pod: &Pod,
    container: &str,
    resource: &str,
    divisor: Option<&str>,
) -> Option<String> {
    let c = pod
        .spec
        .as_ref()?
        .containers
        .iter()
        .chain(pod.spec.as_ref()?.init_containers.iter().flatten())
        .find(|c| c.name == container)?;
    let (which, name) = resource.split_once('.')?;
    let r = c.resources.as_ref();
    let get = |w: &str| {
        r.and_then(|r| {
            if w == "limits" {
                r.limits.as_ref()
            } else {
                r.requests.as_ref()
            }
        })
        .and_then(|m| m.get(name))
        .and_then(|q| milli_value(&q.0))
    };
    let value = match which {
        "limits" => get("limits").or_else(|| get("requests")),
        "requests" => get("requests"),
        _ => return None,
    }
    .unwrap_or(0);
    let divisor = divisor
        .and_then(milli_value)
        .filter(|d| *d > 0)
        .unwrap_or(1000);
    // Both are in thousandths; the quotient is the value in divisor units, rounded up.
    let q = (value + divisor - 1) / divisor;
    Some(q.to_string())
}

fn downward_files(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: u32,
    volume: &str,
) -> Result<Vec<VolumeFile>, SourceError> {
    let bad = |message: String| SourceError::Volume {
        volume: volume.to_string(),
        message,
    };
    items
        .iter()
        .map(|it| {
            let data = if let Some(f) = &it.field_ref {
                field_value(pod, &f.field_path)
                    .ok_or_else(|| bad(format!("unsupported fieldPath {:?}", f.field_path)))?
            } else if let Some(r) = &it.resource_field_ref {
                let container = r.container_name.as_deref().unwrap_or_default();
                resource_value(
                    pod,
                    container,
                    &r.resource,
                    r.divisor.as_ref().map(|d| d.0.as_str()),
                )
                .ok_or_else(|| {
                    bad(format!(
                        "cannot resolve {} of container {container:?}",
                        r.resource
                    ))
                })?
            } else {
                return Err(bad(format!("item {:?} has no source", it.path)));
            };
            VolumeFile::item(&it.path, data.into_bytes(), it.mode, default_mode).map_err(bad)
        })
        .collect()
}

fn mode(m: Option<i32>) -> u32 {
    m.and_then(|m| u32::try_from(m).ok()).unwrap_or(0o644)
}

/// The files of a `downwardAPI` volume.
pub fn downward_api(
    pod: &Pod,
    src: &k8s_openapi::api::core::v1::DownwardAPIVolumeSource,
    volume: &str,
) -> Result<Vec<VolumeFile>, SourceError> {
    downward_files(
        pod,
        src.items.as_deref().unwrap_or_default(),
        mode(src.default_mode),
        volume,
    )
}

/// The files of a `projected` volume, each source's in turn.
pub fn projected(
    pod: &Pod,
    src: &ProjectedVolumeSource,
    sources: &Sources,
    volume: &str,
) -> Result<Vec<VolumeFile>, SourceError> {
    let default_mode = mode(src.default_mode);
    let mut out = Vec::new();
    for s in src.sources.iter().flatten() {
        if let Some(cm) = &s.config_map {
            match sources.data("configmap", &cm.name) {
                Ok(d) => out.extend(files_of(d, cm.items.as_ref(), default_mode, volume)?),
                Err(_) if cm.optional.unwrap_or(false) => {}
                Err(e) => return Err(e),
            }
        } else if let Some(sec) = &s.secret {
            match sources.data("secret", &sec.name) {
                Ok(d) => out.extend(files_of(d, sec.items.as_ref(), default_mode, volume)?),
                Err(_) if sec.optional.unwrap_or(false) => {}
                Err(e) => return Err(e),
            }
        } else if let Some(d) = &s.downward_api {
            out.extend(downward_files(
                pod,
                d.items.as_deref().unwrap_or_default(),
                default_mode,
                volume,
            )?);
        } else if let Some(t) = &s.service_account_token {
            let key = token_key(t.audience.as_deref(), t.expiration_seconds);
            let token = sources
                .tokens
                .get(&key)
                .ok_or_else(|| SourceError::Volume {
                    volume: volume.to_string(),
                    message: "no service account token was issued for it".to_string(),
                })?;
            out.push(VolumeFile {
                path: safe_relative(&t.path).unwrap_or_else(|| PathBuf::from("token")),
                data: token.token.clone().into_bytes(),
                mode: default_mode,
            });
        } else {
            return Err(SourceError::Volume {
                volume: volume.to_string(),
                message: "this projected source is not supported by the krust agent yet"
                    .to_string(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapProjection, Container, DownwardAPIProjection, DownwardAPIVolumeSource, KeyToPath,
        ObjectFieldSelector, PodSpec, ResourceFieldSelector, ResourceRequirements,
        ServiceAccountTokenProjection, Volume, VolumeProjection,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn field(path: &str, field_path: &str) -> DownwardAPIVolumeFile {
        DownwardAPIVolumeFile {
            path: path.to_string(),
            field_ref: Some(ObjectFieldSelector {
                api_version: Some("v1".to_string()),
                field_path: field_path.to_string(),
            }),
            ..Default::default()
        }
    }

    fn resource(path: &str, res: &str, divisor: Option<&str>) -> DownwardAPIVolumeFile {
        DownwardAPIVolumeFile {
            path: path.to_string(),
            resource_field_ref: Some(ResourceFieldSelector {
                container_name: Some("c".to_string()),
                resource: res.to_string(),
                divisor: divisor.map(|d| Quantity(d.to_string())),
            }),
            ..Default::default()
        }
    }

    fn pod(volumes: Vec<Volume>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".to_string()),
                namespace: Some("ns".to_string()),
                uid: Some("u-1".to_string()),
                labels: Some(BTreeMap::from([
                    ("app".to_string(), "web".to_string()),
                    ("tier".to_string(), "a \"b\"".to_string()),
                ])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".to_string(),
                    resources: Some(ResourceRequirements {
                        limits: Some(BTreeMap::from([
                            ("cpu".to_string(), Quantity("500m".to_string())),
                            ("memory".to_string(), Quantity("64Mi".to_string())),
                        ])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                volumes: Some(volumes),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn text(files: &[VolumeFile], path: &str) -> String {
        files
            .iter()
            .find(|f| f.path.as_path() == std::path::Path::new(path))
            .map(|f| String::from_utf8_lossy(&f.data).into_owned())
            .unwrap_or_else(|| panic!("no file {path}"))
    }

    #[test]
    fn downward_api_files() {
        let p = pod(vec![]);
        let src = DownwardAPIVolumeSource {
            default_mode: Some(0o600),
            items: Some(vec![
                field("labels", "metadata.labels"),
                field("name", "metadata.name"),
                field("uid", "metadata.uid"),
                field("app", "metadata.labels['app']"),
                resource("cpu", "limits.cpu", Some("1m")),
                resource("cpu-cores", "limits.cpu", None),
                resource("mem", "limits.memory", Some("1Mi")),
                DownwardAPIVolumeFile {
                    mode: Some(0o400),
                    ..field("ns", "metadata.namespace")
                },
            ]),
        };
        let files = downward_api(&p, &src, "v").expect("files");
        assert_eq!(text(&files, "labels"), "app=\"web\"\ntier=\"a \\\"b\\\"\"");
        assert_eq!(text(&files, "name"), "p");
        assert_eq!(text(&files, "uid"), "u-1");
        assert_eq!(text(&files, "app"), "web");
        assert_eq!(text(&files, "cpu"), "500");
        assert_eq!(text(&files, "cpu-cores"), "1", "rounded up");
        assert_eq!(text(&files, "mem"), "64");
        assert_eq!(
            files
                .iter()
                .find(|f| f.path.as_path() == std::path::Path::new("ns"))
                .map(|f| f.mode),
            Some(0o400)
        );
        assert_eq!(files[0].mode, 0o600);
        let bad = DownwardAPIVolumeSource {
            items: Some(vec![field("x", "spec.nodeName")]),
            ..Default::default()
        };
        assert!(downward_api(&p, &bad, "v").is_err());
    }

    #[test]
    fn kube_api_access_projection() {
        let src = ProjectedVolumeSource {
            default_mode: Some(0o644),
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        expiration_seconds: Some(3607),
                        path: "token".to_string(),
                        audience: None,
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".to_string(),
                        items: Some(vec![KeyToPath {
                            key: "ca.crt".to_string(),
                            path: "ca.crt".to_string(),
                            mode: None,
                        }]),
                        optional: None,
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![field("namespace", "metadata.namespace")]),
                    }),
                    ..Default::default()
                },
            ]),
        };
        let p = pod(vec![Volume {
            name: "kube-api-access-abcde".to_string(),
            projected: Some(src.clone()),
            ..Default::default()
        }]);
        assert_eq!(token_keys(&p), vec![(String::new(), 3607)]);
        let mut sources = Sources::default();
        sources.config_maps.insert(
            "kube-root-ca.crt".to_string(),
            Some(BTreeMap::from([("ca.crt".to_string(), b"PEM".to_vec())])),
        );
        // Without its token the volume cannot be made.
        assert!(projected(&p, &src, &sources, "v").is_err());
        let now = SystemTime::now();
        sources.tokens.insert(
            (String::new(), 3607),
            Token {
                token: "jwt".to_string(),
                issued: now,
                expires: now + Duration::from_secs(1000),
            },
        );
        let files = projected(&p, &src, &sources, "v").expect("files");
        assert_eq!(text(&files, "token"), "jwt");
        assert_eq!(text(&files, "ca.crt"), "PEM");
        assert_eq!(text(&files, "namespace"), "ns");
        assert_eq!(
            next_refresh(&sources.tokens),
            Some(now + Duration::from_secs(800))
        );
        // The ConfigMap is not optional.
        sources.config_maps.clear();
        assert!(projected(&p, &src, &sources, "v").is_err());
    }
}
