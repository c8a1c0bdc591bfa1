//! Configuration in the shape of upstream's `KubeSchedulerConfiguration`
//! (kubescheduler.config.k8s.io/v1): profiles by `schedulerName`, plugins enabled and disabled
//! per extension point or `multiPoint`, score weights, and `pluginConfig` args. Without a
//! file, one `default-scheduler` profile with upstream's default plugins and weights.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("parsing scheduler configuration: {0}")]
    Parse(#[source] serde_yaml::Error),
    #[error("profile {profile:?}: {message}")]
    Profile { profile: String, message: String },
    #[error("no profiles")]
    NoProfiles,
}

/// Upstream's default plugins (multiPoint) with their default score weights.
pub const DEFAULT_PLUGINS: &[(&str, i64)] = &[
    ("NodeUnschedulable", 0),
    ("NodeName", 0),
    ("TaintToleration", 3),
    ("NodeAffinity", 2),
    ("NodePorts", 0),
    ("NodeResourcesFit", 1),
    ("VolumeBinding", 0),
    ("PodTopologySpread", 2),
    ("InterPodAffinity", 2),
    ("DefaultPreemption", 0),
    ("NodeResourcesBalancedAllocation", 1),
    ("ImageLocality", 1),
    ("DefaultBinder", 0),
];

pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginRef {
    pub name: String,
    #[serde(default)]
    pub weight: Option<i64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginSet {
    #[serde(default)]
    pub enabled: Vec<PluginRef>,
    #[serde(default)]
    pub disabled: Vec<PluginRef>,
}

/// `profiles[].plugins`: one set per extension point.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plugins {
    #[serde(default)]
    pub multi_point: PluginSet,
    #[serde(default)]
    pub pre_filter: PluginSet,
    #[serde(default)]
    pub filter: PluginSet,
    #[serde(default)]
    pub post_filter: PluginSet,
    #[serde(default)]
    pub pre_score: PluginSet,
    #[serde(default)]
    pub score: PluginSet,
    #[serde(default)]
    pub reserve: PluginSet,
    #[serde(default)]
    pub pre_bind: PluginSet,
    #[serde(default)]
    pub bind: PluginSet,
    #[serde(default)]
    pub queue_sort: PluginSet,
}

#[derive(Clone, Debug, Deserialize)]
pub struct PluginConfig {
    pub name: String,
    #[serde(default)]
    pub args: Value,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileConfig {
    #[serde(default)]
    pub scheduler_name: Option<String>,
    #[serde(default)]
    pub percentage_of_nodes_to_score: Option<i32>,
    #[serde(default)]
    pub plugins: Plugins,
    #[serde(default)]
    pub plugin_config: Vec<PluginConfig>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileConfig {
    #[serde(default)]
    profiles: Vec<ProfileConfig>,
    #[serde(default)]
    percentage_of_nodes_to_score: Option<i32>,
    #[serde(default)]
    pod_initial_backoff_seconds: Option<u64>,
    #[serde(default)]
    pod_max_backoff_seconds: Option<u64>,
    #[serde(default)]
    parallelism: Option<usize>,
}

/// Everything `run` needs besides the client.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    pub profiles: Vec<ProfileConfig>,
    /// 0 means upstream's adaptive default (50% minus 1% per 125 nodes, at least 5%).
    pub percentage_of_nodes_to_score: i32,
    pub pod_initial_backoff: Duration,
    pub pod_max_backoff: Duration,
    /// Binds in flight at once.
    pub bind_concurrency: usize,
    /// Emit a `Scheduled` event for each bound pod, as upstream does.
    pub scheduled_events: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            profiles: vec![ProfileConfig {
                scheduler_name: Some(DEFAULT_SCHEDULER_NAME.into()),
                ..ProfileConfig::default()
            }],
            percentage_of_nodes_to_score: 0,
            pod_initial_backoff: Duration::from_secs(1),
            pod_max_backoff: Duration::from_secs(10),
            bind_concurrency: 64,
            scheduled_events: true,
        }
    }
}

impl SchedulerConfig {
    /// Parses a KubeSchedulerConfiguration document; missing fields take upstream's defaults.
    pub fn from_yaml(text: &str) -> Result<SchedulerConfig, ConfigError> {
        let f: FileConfig = serde_yaml::from_str(text).map_err(ConfigError::Parse)?;
        let mut c = SchedulerConfig::default();
        if !f.profiles.is_empty() {
            c.profiles = f.profiles;
        }
        for p in &mut c.profiles {
            if p.scheduler_name.as_deref().is_none_or(str::is_empty) {
                p.scheduler_name = Some(DEFAULT_SCHEDULER_NAME.into());
            }
        }
        if let Some(p) = f.percentage_of_nodes_to_score {
            c.percentage_of_nodes_to_score = p;
        }
        if let Some(s) = f.pod_initial_backoff_seconds {
            c.pod_initial_backoff = Duration::from_secs(s);
        }
        if let Some(s) = f.pod_max_backoff_seconds {
            c.pod_max_backoff = Duration::from_secs(s);
        }
        if let Some(p) = f.parallelism {
            c.bind_concurrency = p.max(1) * 4;
        }
        // validate by building
        for p in &c.profiles {
            crate::profile::Profile::build(p, c.percentage_of_nodes_to_score)?;
        }
        Ok(c)
    }
}

/// Which plugins a profile runs at which extension point, with score weights.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Plugin names in order, each with the points it is enabled at and its weight.
    pub plugins: Vec<(String, Vec<&'static str>, i64)>,
    pub args: HashMap<String, Value>,
}

pub const POINTS: &[&str] = &[
    "preFilter",
    "filter",
    "postFilter",
    "preScore",
    "score",
    "reserve",
    "preBind",
    "bind",
];

fn set_for<'a>(p: &'a Plugins, point: &str) -> &'a PluginSet {
    match point {
        "preFilter" => &p.pre_filter,
        "filter" => &p.filter,
        "postFilter" => &p.post_filter,
        "preScore" => &p.pre_score,
        "score" => &p.score,
        "reserve" => &p.reserve,
        "preBind" => &p.pre_bind,
        _ => &p.bind,
    }
}

fn disabled(set: &PluginSet, name: &str) -> bool {
    set.disabled.iter().any(|d| d.name == "*" || d.name == name)
}

/// Applies enabled/disabled lists to upstream's defaults, as upstream merges them.
pub fn resolve(p: &ProfileConfig) -> Resolved {
    let mut order: Vec<String> = Vec::new();
    let mut weights: HashMap<String, i64> = HashMap::new();
    let mut multi: Vec<String> = Vec::new();
    for (name, w) in DEFAULT_PLUGINS {
        if !disabled(&p.plugins.multi_point, name) {
            multi.push(name.to_string());
            weights.insert(name.to_string(), *w);
        }
    }
    for e in &p.plugins.multi_point.enabled {
        if !multi.contains(&e.name) {
            multi.push(e.name.clone());
        }
        if let Some(w) = e.weight {
            weights.insert(e.name.clone(), w);
        }
    }
    order.extend(multi.iter().cloned());
    let mut points: HashMap<String, Vec<&'static str>> = HashMap::new();
    for point in POINTS {
        let set = set_for(&p.plugins, point);
        for name in &multi {
            if !disabled(set, name) {
                points.entry(name.clone()).or_default().push(point);
            }
        }
        for e in &set.enabled {
            if !order.contains(&e.name) {
                order.push(e.name.clone());
            }
            let v = points.entry(e.name.clone()).or_default();
            if !v.contains(point) {
                v.push(point);
            }
            if *point == "score" {
                if let Some(w) = e.weight {
                    weights.insert(e.name.clone(), w);
                }
            }
        }
    }
    Resolved {
        plugins: order
            .into_iter()
            .map(|n| {
                let pts = points.remove(&n).unwrap_or_default();
                let w = weights.get(&n).copied().filter(|w| *w > 0).unwrap_or(1);
                (n, pts, w)
            })
            .collect(),
        args: p
            .plugin_config
            .iter()
            .map(|c| (c.name.clone(), c.args.clone()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_have_upstream_weights() {
        let c = SchedulerConfig::default();
        let r = resolve(&c.profiles[0]);
        let tt = r
            .plugins
            .iter()
            .find(|p| p.0 == "TaintToleration")
            .expect("tt");
        assert_eq!(tt.2, 3);
        assert!(tt.1.contains(&"filter") && tt.1.contains(&"score"));
    }

    #[test]
    fn profiles_disable_enable_and_configure() {
        let yaml = r#"
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles:
- schedulerName: default-scheduler
- schedulerName: bin-packer
  plugins:
    score:
      disabled:
      - name: "*"
      enabled:
      - name: NodeResourcesFit
        weight: 5
    filter:
      disabled:
      - name: TaintToleration
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy:
        type: MostAllocated
"#;
        let c = SchedulerConfig::from_yaml(yaml).expect("config");
        assert_eq!(c.profiles.len(), 2);
        let r = resolve(&c.profiles[1]);
        let get = |n: &str| r.plugins.iter().find(|p| p.0 == n).expect(n);
        assert_eq!(get("NodeResourcesFit").2, 5);
        assert!(get("NodeResourcesFit").1.contains(&"score"));
        assert!(!get("ImageLocality").1.contains(&"score"));
        assert!(!get("TaintToleration").1.contains(&"filter"));
        assert_eq!(
            r.args["NodeResourcesFit"]["scoringStrategy"]["type"],
            "MostAllocated"
        );
        let bad = "profiles:\n- schedulerName: x\n  plugins:\n    filter:\n      enabled:\n      - name: NoSuchPlugin\n";
        assert!(SchedulerConfig::from_yaml(bad).is_err());
    }
}
