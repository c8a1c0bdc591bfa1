//! The API server's CustomResourceDefinition controllers, in-process as upstream's
//! apiextensions-apiserver runs them: after any change to a definition, the names of every
//! definition are checked for clashes (`NamesAccepted`), the accepted ones are served
//! (`Established`; the registry swapped so routing, discovery and OpenAPI follow), the
//! storage version is recorded in `status.storedVersions`, and a definition being deleted
//! has its custom resources deleted before its cleanup finalizer is removed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use krust_apiextensions::crd::CrdView;
use krust_machinery::codec::FieldValidation;
use krust_machinery::registry::Registry;
use krust_machinery::{object, ApiError, ResourceInfo};
use serde_json::{json, Value};

use crate::request::{Query, ResourcePath};
use crate::rest::{decode_stored, Rest, WriteCtx};
use crate::strategy::customresource;
use crate::strategy::customresourcedefinition::{
    self as crd_strategy, condition_true, set_condition, CLEANUP_FINALIZER,
};

/// One definition as stored, with what was derived from it.
struct Definition {
    obj: Value,
    view: Option<CrdView>,
}

/// Serves the definitions stored now: the registry the server starts with, so that custom
/// resources are reachable from the first request after a restart.
pub async fn initial_registry(rest: &Rest, builtin: &Registry) -> Result<Registry, ApiError> {
    let defs = load(rest).await?;
    Ok(registry_of(builtin, &defs, &accepted(builtin, &defs)))
}

/// Keeps definitions' status and the served kinds in step with the stored definitions
/// until the process ends.
pub async fn run(rest: Arc<Rest>, builtin: Registry) {
    let info = crd_strategy::resource();
    loop {
        let after = match rest.store.current_revision().await {
            Ok(r) => r,
            Err(_) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = sync(&rest, &builtin).await {
            tracing::warn!(error = %e, "syncing CustomResourceDefinitions failed; retrying");
        }
        // Wake on the next change to a definition; look again every few seconds anyway,
        // for deletions waiting on custom resources with finalizers.
        let prefix = info.key_prefix();
        match rest.store.watch(&prefix, after).await {
            Ok(mut events) => {
                let _ = tokio::time::timeout(Duration::from_secs(5), events.next()).await;
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

async fn load(rest: &Rest) -> Result<Vec<Definition>, ApiError> {
    let info = crd_strategy::resource();
    let list = rest
        .store
        .list(&info.key_prefix(), None, 0)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut defs: Vec<Definition> = list
        .items
        .iter()
        .filter_map(|kv| decode_stored(&kv.value, kv.mod_revision).ok())
        .map(|obj| Definition {
            view: CrdView::from_crd(&obj).ok(),
            obj,
        })
        .collect();
    // A definition whose names were accepted keeps them, as upstream's naming controller
    // checks new names against accepted ones; then the older one (timestamps have whole
    // seconds, so the name breaks ties).
    defs.sort_by(|a, b| {
        let key = |d: &Definition| {
            let held = condition_true(&d.obj, "NamesAccepted");
            let ts = object::meta_str(&d.obj, "creationTimestamp").map(str::to_string);
            (!held, ts)
        };
        key(a)
            .cmp(&key(b))
            .then_with(|| object::name(&a.obj).cmp(&object::name(&b.obj)))
    });
    Ok(defs)
}

/// For each definition (by index), `Ok(())` when its names are its own, else why not.
fn accepted(builtin: &Registry, defs: &[Definition]) -> Vec<Result<(), String>> {
    // (group, name) of every plural, singular, short name and kind already taken.
    let mut taken: HashSet<(String, String)> = HashSet::new();
    for r in builtin.resources() {
        taken.insert((r.group.to_string(), r.plural.to_string()));
        taken.insert((r.group.to_string(), r.kind.to_string()));
    }
    defs.iter()
        .map(|d| {
            let Some(v) = &d.view else {
                return Err("the definition is not valid".into());
            };
            let mut names: Vec<(&str, &str)> = vec![
                ("plural", v.plural.as_str()),
                ("singular", v.singular.as_str()),
                ("kind", v.kind.as_str()),
                ("listKind", v.list_kind.as_str()),
            ];
            names.extend(v.short_names.iter().map(|s| ("shortNames", s.as_str())));
            for (field, name) in &names {
                if taken.contains(&(v.group.clone(), name.to_string())) {
                    return Err(format!("\"{name}\" is already in use ({field})"));
                }
            }
            for (_, name) in names {
                taken.insert((v.group.clone(), name.to_string()));
            }
            Ok(())
        })
        .collect()
}

fn schema_key(obj: &Value) -> String {
    format!(
        "{}/{}",
        object::meta_str(obj, "uid").unwrap_or_default(),
        object::metadata(obj)
            .and_then(|m| m.get("generation"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    )
}

fn registry_of(
    builtin: &Registry,
    defs: &[Definition],
    accepted: &[Result<(), String>],
) -> Registry {
    let mut extra: Vec<ResourceInfo> = Vec::new();
    for (d, ok) in defs.iter().zip(accepted) {
        if let (Some(view), Ok(())) = (&d.view, ok) {
            extra.extend(customresource::resources(view, &schema_key(&d.obj)));
        }
    }
    builtin.extended(extra)
}

/// What the served kinds depend on: each served definition and its generation.
fn fingerprint(defs: &[Definition], accepted: &[Result<(), String>]) -> Vec<String> {
    defs.iter()
        .zip(accepted)
        .filter(|(_, ok)| ok.is_ok())
        .map(|(d, _)| schema_key(&d.obj))
        .collect()
}

async fn sync(rest: &Rest, builtin: &Registry) -> Result<(), ApiError> {
    let defs = load(rest).await?;
    let accepted = accepted(builtin, &defs);
    let served: HashSet<String> = rest
        .registry
        .load()
        .resources()
        .iter()
        .filter(|r| r.ops.is_custom())
        .map(|r| r.ops.schema_key())
        .collect();
    let wanted = registry_of(builtin, &defs, &accepted);
    let wanted_keys: HashSet<String> = wanted
        .resources()
        .iter()
        .filter(|r| r.ops.is_custom())
        .map(|r| r.ops.schema_key())
        .collect();
    if served != wanted_keys {
        tracing::info!(definitions = ?fingerprint(&defs, &accepted), "serving custom resources");
        rest.registry.replace(wanted);
    }
    let mut errors = HashMap::new();
    for (d, ok) in defs.iter().zip(&accepted) {
        let name = object::name(&d.obj).unwrap_or_default().to_string();
        if let Err(e) = update_status(rest, &name, ok).await {
            errors.insert(name.clone(), e);
        }
        if object::deletion_timestamp(&d.obj).is_some() {
            if let Err(e) = finalize(rest, d, &name).await {
                errors.insert(name, e);
            }
        }
    }
    match errors.into_iter().next() {
        Some((name, e)) => Err(ApiError::internal(format!("{name}: {e}"))),
        None => Ok(()),
    }
}

fn ctx(q: &Query) -> WriteCtx<'_> {
    WriteCtx {
        query: q,
        manager: "krust-apiextensions".into(),
        dry_run: false,
        validation: FieldValidation::Ignore,
        applied: false,
        who: None,
    }
}

/// The status a definition should have: conditions, accepted names, stored versions.
fn desired_status(old: &Value, accepted: &Result<(), String>) -> Value {
    let mut new = old.clone();
    match accepted {
        Ok(()) => {
            set_condition(
                &mut new,
                "NamesAccepted",
                "True",
                "NoConflicts",
                "no conflicts found",
            );
            if let Some(names) = old.pointer("/spec/names") {
                new["status"]["acceptedNames"] = names.clone();
            }
            let reason = if condition_true(old, "Established") {
                None
            } else {
                Some("InitialNamesAccepted")
            };
            if let Some(reason) = reason {
                set_condition(
                    &mut new,
                    "Established",
                    "True",
                    reason,
                    "the initial names have been accepted",
                );
            }
            if let Some(storage) = krust_apiextensions::crd::storage_version(old) {
                let mut stored: Vec<Value> = old
                    .pointer("/status/storedVersions")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                if !stored.iter().any(|v| v.as_str() == Some(storage.as_str())) {
                    stored.push(json!(storage));
                }
                new["status"]["storedVersions"] = json!(stored);
            }
        }
        Err(why) => {
            set_condition(&mut new, "NamesAccepted", "False", "NameConflict", why);
            if !condition_true(old, "Established") {
                set_condition(
                    &mut new,
                    "Established",
                    "False",
                    "NotAccepted",
                    "not all names are accepted",
                );
            }
            if new["status"].get("acceptedNames").is_none() {
                new["status"]["acceptedNames"] = json!({"plural": "", "kind": ""});
            }
        }
    }
    new
}

async fn update_status(
    rest: &Rest,
    name: &str,
    accepted: &Result<(), String>,
) -> Result<(), ApiError> {
    let info = crd_strategy::resource();
    let rp = ResourcePath {
        info: &info,
        namespace: None,
        name: Some(name.to_string()),
        subresource: Some("status".into()),
        legacy_watch: false,
    };
    let q = Query::default();
    rest.guaranteed_update(&rp, name, &ctx(&q), |old| {
        let new = desired_status(old, accepted);
        Ok((new.get("status") != old.get("status")).then_some(new))
    })
    .await
    .map(|_| ())
}

/// Deletes the definition's custom resources; once none is left, lets it go.
async fn finalize(rest: &Rest, def: &Definition, name: &str) -> Result<(), ApiError> {
    if !object::finalizers(&def.obj)
        .iter()
        .any(|f| f == CLEANUP_FINALIZER)
    {
        return Ok(());
    }
    if let Some(view) = &def.view {
        let prefix = if view.group.is_empty() {
            format!("/registry/core/{}/", view.plural)
        } else {
            format!("/registry/{}/{}/", view.group, view.plural)
        };
        let left = rest
            .store
            .list(&prefix, None, 0)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        if !left.items.is_empty() {
            delete_all(rest, view, &left.items).await;
            return Ok(());
        }
    }
    let info = crd_strategy::resource();
    let rp = ResourcePath {
        info: &info,
        namespace: None,
        name: Some(name.to_string()),
        subresource: None,
        legacy_watch: false,
    };
    let q = Query::default();
    rest.guaranteed_update(&rp, name, &ctx(&q), |old| {
        let mut new = old.clone();
        let kept: Vec<String> = object::finalizers(old)
            .into_iter()
            .filter(|f| f != CLEANUP_FINALIZER)
            .collect();
        new["metadata"]["finalizers"] = json!(kept);
        Ok(Some(new))
    })
    .await
    .map(|_| ())
}

/// Deletes each custom resource through the REST layer (its own finalizers still hold it).
async fn delete_all(rest: &Rest, view: &CrdView, items: &[krust_store::KeyValue]) {
    let registry = rest.registry.load();
    let Some(info) = registry
        .resources()
        .iter()
        .find(|r| r.group == view.group && r.plural == view.plural)
    else {
        return;
    };
    for kv in items {
        let Ok(obj) = decode_stored(&kv.value, kv.mod_revision) else {
            continue;
        };
        if object::deletion_timestamp(&obj).is_some() {
            continue;
        }
        let name = object::name(&obj).unwrap_or_default().to_string();
        let rp = ResourcePath {
            info,
            namespace: object::namespace(&obj).map(str::to_string),
            name: Some(name.clone()),
            subresource: None,
            legacy_watch: false,
        };
        if let Err(e) = rest.delete(&rp, &name, &json!({}), false, None).await {
            tracing::debug!(error = %e, %name, "deleting a custom resource failed; retrying");
        }
    }
}
