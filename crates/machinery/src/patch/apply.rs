//! Server-side apply and managed-fields tracking, as upstream's field manager does them:
//! who owns which field, what an apply removes, and when two managers conflict.

use std::sync::LazyLock;

use serde_json::{Map, Value};

use super::fieldpath::{path_string, values_equal, FieldSet, Path, PathElement};
use super::managed::{self, ManagerId, Managers, Owned};
use super::schema::{type_tree, Node};
use super::typed::{self, Comparison};
use super::{ApplyConflict, PatchError};
use crate::registry::ResourceInfo;

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The manager `kubectl apply --server-side` uses; upstream eases its move from client-side
/// apply (see [`allowed_by_last_applied`]).
const KUBECTL: &str = "kubectl";

/// Fields no manager ever owns: identity and server-maintained metadata.
static UNTRACKED: LazyLock<FieldSet> = LazyLock::new(untracked);

fn untracked() -> FieldSet {
    let mut set = FieldSet::new();
    let f = |s: &str| PathElement::Field(s.into());
    set.insert(&[f("apiVersion")]);
    set.insert(&[f("kind")]);
    set.insert(&[f("metadata")]);
    for field in [
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "clusterName",
        "generation",
        "managedFields",
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        set.insert(&[f("metadata"), f(field)]);
    }
    set
}

/// Fields a write through `subresource` cannot set, and which are therefore never recorded:
/// `status` for main-resource writes to kinds with a status subresource, `spec` for writes to
/// the status subresource.
fn ignored_fields(info: &ResourceInfo, subresource: &str) -> FieldSet {
    let mut set = FieldSet::new();
    match subresource {
        "" if info.has_subresource("status") => set.insert(&[PathElement::Field("status".into())]),
        "status" => set.insert(&[PathElement::Field("spec".into())]),
        _ => {}
    }
    set
}

/// What every step needs: the kind's type, the API version and the fields to ignore.
struct Ctx<'a> {
    info: &'a ResourceInfo,
    root: Node<'a>,
    ignored: FieldSet,
}

impl Ctx<'_> {
    fn api_version(&self) -> String {
        self.info.api_version()
    }

    /// Compares two versions of the object as upstream does: with value-held structs present
    /// and ignored fields left out.
    fn compare(&self, old: &Value, new: &Value) -> Comparison {
        self.compare_owned(old.clone(), new.clone())
    }

    /// [`Ctx::compare`] of values the caller no longer needs.
    fn compare_owned(&self, mut old: Value, mut new: Value) -> Comparison {
        typed::fill_value_structs(self.root, &mut old);
        typed::fill_value_structs(self.root, &mut new);
        let mut cmp = typed::compare(self.root, Some(&old), Some(&new));
        cmp.exclude(&self.ignored);
        cmp
    }

    /// [`Ctx::compare`] of an `old` the caller no longer needs with `new`, which is filled
    /// for the comparison and then put back as it was.
    fn compare_in_place(&self, mut old: Value, new: &mut Value) -> Comparison {
        typed::fill_value_structs(self.root, &mut old);
        let log = typed::fill_value_structs_undoably(self.root, new);
        let mut cmp = typed::compare(self.root, Some(&old), Some(new));
        typed::unfill_value_structs(self.root, new, &log);
        cmp.exclude(&self.ignored);
        cmp
    }

    fn named(&self, set: &FieldSet) -> FieldSet {
        typed::with_named_fields(self.root, set)
    }

    fn field_set(&self, value: &Value) -> FieldSet {
        typed::field_set(self.root, value)
    }

    fn remove(&self, value: &Value, set: &FieldSet) -> Value {
        typed::remove_fields(self.root, value, set).unwrap_or_else(|| Value::Object(Map::new()))
    }
}

/// A copy of `obj` without `metadata.managedFields` (which is not copied at all).
fn without_managed_fields(obj: &Value) -> Value {
    let Value::Object(map) = obj else {
        return obj.clone();
    };
    let Some(Value::Object(meta)) = map.get("metadata") else {
        return obj.clone();
    };
    let entries: Vec<(&String, &Value)> = meta.iter().collect();
    let Some(at) = entries.iter().position(|(k, _)| *k == "managedFields") else {
        return obj.clone();
    };
    // The entries in the order `Map::remove` leaves them: with `preserve_order` it is a
    // swap remove, the last entry taking the removed one's place.
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.swap_remove(at);
    let mut trimmed = Map::new();
    for i in order {
        let (k, v) = entries[i];
        trimmed.insert(k.clone(), v.clone());
    }
    let mut trimmed = Some(trimmed);
    let mut out = Map::new();
    for (k, v) in map {
        let v = match (k.as_str(), trimmed.take()) {
            ("metadata", Some(meta)) => Value::Object(meta),
            (_, t) => {
                trimmed = t;
                v.clone()
            }
        };
        out.insert(k.clone(), v);
    }
    Value::Object(out)
}

fn set_managed_fields(obj: &mut Value, managers: &Managers) {
    let encoded = managed::encode(managers);
    if let Some(map) = obj.as_object_mut() {
        let meta = map
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(meta) = meta.as_object_mut() {
            match encoded {
                Some(list) => {
                    meta.insert("managedFields".into(), list);
                }
                None => {
                    meta.remove("managedFields");
                }
            }
        }
    }
}

/// Records a non-apply write of `new` over `old` (`None` for a create) by `manager`: the
/// fields it added or changed become its own and leave every other manager; removed fields
/// leave every manager. Returns `new` with `metadata.managedFields` updated.
///
/// As upstream, `new` may carry its own `managedFields` (a client editing them); `[]` or
/// `[{}]` clears them, and an existing object without any is then left untracked until
/// the next apply.
pub fn update_managed_fields(
    info: &ResourceInfo,
    old: Option<&Value>,
    new: &Value,
    manager: &str,
    now: &str,
) -> Value {
    update_managed_fields_subresource(info, "", old, new, manager, now)
}

/// [`update_managed_fields`] for a write through `subresource` (e.g. `status`); `""` is the
/// main resource. Managed fields sent in a subresource write are ignored.
pub fn update_managed_fields_subresource(
    info: &ResourceInfo,
    subresource: &str,
    old: Option<&Value>,
    new: &Value,
    manager: &str,
    now: &str,
) -> Value {
    let managers = initial_managers(subresource, old, new);
    let out = without_managed_fields(new);
    record_write(info, subresource, old, out, managers, manager, now)
}

/// [`update_managed_fields_subresource`] on an object the caller owns: `obj` becomes the
/// result, and is not copied on the way.
pub fn update_managed_fields_in_place(
    info: &ResourceInfo,
    subresource: &str,
    old: Option<&Value>,
    obj: &mut Value,
    manager: &str,
    now: &str,
) {
    let managers = initial_managers(subresource, old, obj);
    let mut out = std::mem::take(obj);
    if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    *obj = record_write(info, subresource, old, out, managers, manager, now);
}

/// The managers a write starts from: those `new` carries (a client editing them), or the
/// live object's.
fn initial_managers(subresource: &str, old: Option<&Value>, new: &Value) -> Managers {
    let live_managers = || {
        old.and_then(|o| managed::decode(o).ok().flatten())
            .unwrap_or_default()
    };
    if !subresource.is_empty() {
        live_managers()
    } else if managed::is_reset(new) {
        Managers::new()
    } else {
        match managed::decode(new) {
            Ok(Some(m)) if !m.is_empty() => m,
            _ => live_managers(),
        }
    }
}

/// Records the write of `out` (the new object without managed fields) over `old`.
fn record_write(
    info: &ResourceInfo,
    subresource: &str,
    old: Option<&Value>,
    mut out: Value,
    mut managers: Managers,
    manager: &str,
    now: &str,
) -> Value {
    let existing = old.is_some_and(|o| crate::object::uid(o).is_some());
    if managers.is_empty() && existing {
        return out;
    }
    let old = old
        .map(without_managed_fields)
        .unwrap_or_else(|| Value::Object(Map::new()));
    let tree = type_tree(info);
    let ctx = Ctx {
        info,
        root: tree.root(),
        ignored: ignored_fields(info, subresource),
    };
    let id = ManagerId::update(manager, &ctx.api_version(), subresource);
    let cmp = ctx.compare_in_place(old, &mut out);
    record_comparison(&ctx, cmp, &mut managers, &id, now);
    set_managed_fields(&mut out, &managers);
    out
}

/// Upstream's update bookkeeping: changed fields move to `id`, removed fields leave
/// everyone, and `id`'s timestamp moves only when it took something.
fn record_update(
    ctx: &Ctx,
    old: &Value,
    new: &Value,
    managers: &mut Managers,
    id: &ManagerId,
    now: &str,
) {
    record_comparison(ctx, ctx.compare(old, new), managers, id, now);
}

/// [`record_update`] of an already made comparison.
fn record_comparison(
    ctx: &Ctx,
    cmp: Comparison,
    managers: &mut Managers,
    id: &ManagerId,
    now: &str,
) {
    let Comparison {
        added,
        modified,
        removed,
    } = cmp;
    let mut changed = modified;
    changed.absorb(added);
    for owned in managers.values_mut() {
        owned.set.remove(&changed);
        owned.set.remove(&removed);
    }
    let mut taken = changed;
    taken.remove(&UNTRACKED);
    if !taken.is_empty() {
        let owned = managers.entry(id.clone()).or_insert_with(|| Owned {
            api_version: ctx.api_version(),
            ..Owned::default()
        });
        taken.absorb(std::mem::take(&mut owned.set));
        owned.set = taken;
        owned.api_version = ctx.api_version();
        owned.time = Some(now.to_string());
    }
    managers.retain(|_, o| !o.set.is_empty());
    managed::cap_update_managers(managers);
}

/// Server-side apply of `applied` (the decoded apply body) by `manager` to the main
/// resource. `live` is the stored object, `None` when the apply creates it; `now` is the
/// RFC 3339 time recorded for the manager.
///
/// The result is `live` with the configuration merged in: fields this manager applied
/// before, no longer applies and nobody else owns are removed; lists merge by their keys;
/// atomic values are replaced. A field owned by another manager that this apply changes is
/// a [`PatchError::Conflict`] unless `force`, which takes it over.
pub fn apply(
    info: &ResourceInfo,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, PatchError> {
    apply_subresource(info, "", live, applied, manager, force, now)
}

/// [`apply`] through `subresource` (e.g. `status`); `""` is the main resource.
pub fn apply_subresource(
    info: &ResourceInfo,
    subresource: &str,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, PatchError> {
    check_applied(info, applied)?;
    let tree = type_tree(info);
    let ctx = Ctx {
        info,
        root: tree.root(),
        ignored: ignored_fields(info, subresource),
    };
    typed::validate(ctx.root, applied).map_err(|e| {
        PatchError::BadRequest(format!(
            "failed to create typed patch object ({}): {e}",
            describe_object(info, applied)
        ))
    })?;

    let live_obj = live
        .map(without_managed_fields)
        .unwrap_or_else(|| Value::Object(Map::new()));
    let mut managers = live
        .and_then(|l| managed::decode(l).ok().flatten())
        .unwrap_or_default();
    if managers.is_empty() && live.is_some() {
        // Whatever the object holds before its first tracked write belongs to a placeholder
        // manager, so it is neither silently taken nor pruned.
        let id = ManagerId::update("before-first-apply", &ctx.api_version(), subresource);
        record_update(
            &ctx,
            &Value::Object(Map::new()),
            &live_obj,
            &mut managers,
            &id,
            now,
        );
    }

    let id = ManagerId::apply(manager, subresource);
    let before = managers.clone();
    let outcome = match apply_once(&ctx, &live_obj, applied, &mut managers, &id, force)? {
        Ok(outcome) => outcome,
        Err(conflicts) if manager == KUBECTL => match allowed_by_last_applied(&ctx, &live_obj) {
            Some(allowed) if conflicts.iter().all(|(_, p)| allowed.has(p)) => {
                managers = before;
                match apply_once(&ctx, &live_obj, applied, &mut managers, &id, true)? {
                    Ok(outcome) => outcome,
                    Err(conflicts) => return Err(conflict_error(conflicts)),
                }
            }
            Some(allowed) => {
                return Err(conflict_error(
                    conflicts
                        .into_iter()
                        .filter(|(_, p)| !allowed.has(p))
                        .collect(),
                ))
            }
            None => return Err(conflict_error(conflicts)),
        },
        Err(conflicts) => return Err(conflict_error(conflicts)),
    };

    if let Some(owned) = managers.get_mut(&id) {
        owned.set.remove(&UNTRACKED);
        owned.api_version = ctx.api_version();
    }
    managers.retain(|_, o| !o.set.is_empty());
    let mut result = match outcome {
        Some(new) => {
            if let Some(owned) = managers.get_mut(&id) {
                owned.time = Some(now.to_string());
            }
            new
        }
        None => live_obj,
    };
    if manager == KUBECTL {
        update_last_applied(&mut result, applied);
    }
    set_managed_fields(&mut result, &managers);
    Ok(result)
}

type Conflicts = Vec<(ManagerId, Path)>;

fn conflict_error(conflicts: Conflicts) -> PatchError {
    PatchError::Conflict(
        conflicts
            .into_iter()
            .map(|(id, path)| ApplyConflict {
                manager: id.manager,
                operation: id.operation,
                api_version: id.api_version,
                subresource: id.subresource,
                field: path_string(&path),
            })
            .collect(),
    )
}

/// The apply body must be an object of this kind without managed fields.
fn check_applied(info: &ResourceInfo, applied: &Value) -> Result<(), PatchError> {
    if !applied.is_object() {
        return Err(PatchError::BadRequest(
            "the apply configuration must be an object".into(),
        ));
    }
    let api_version = applied
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = applied
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if api_version != info.api_version() || kind != info.kind {
        let gv = if api_version.contains('/') {
            api_version.to_string()
        } else {
            format!("/{api_version}")
        };
        return Err(PatchError::BadRequest(format!(
            "invalid object type: {gv}, Kind={kind}"
        )));
    }
    if applied
        .get("metadata")
        .and_then(|m| m.get("managedFields"))
        .is_some_and(|v| !v.is_null())
    {
        return Err(PatchError::BadRequest(
            "metadata.managedFields must be nil".into(),
        ));
    }
    Ok(())
}

/// `namespace/name; group/version, Kind=Kind`, as upstream names objects in errors.
fn describe_object(info: &ResourceInfo, obj: &Value) -> String {
    let ns = crate::object::namespace(obj).unwrap_or("<unknown>");
    let name = crate::object::name(obj).unwrap_or("<unknown>");
    format!(
        "{ns}/{name}; {}/{}, Kind={}",
        info.group, info.version, info.kind
    )
}

/// One apply attempt (upstream's structured-merge-diff `Apply`): merge, record the applied
/// set, prune, and settle ownership with the other managers. `Ok(Err(conflicts))` when other
/// managers own changed fields and `force` is off; `Ok(Ok(None))` when nothing changed.
fn apply_once(
    ctx: &Ctx,
    live: &Value,
    applied: &Value,
    managers: &mut Managers,
    id: &ManagerId,
    force: bool,
) -> Result<Result<Option<Value>, Conflicts>, PatchError> {
    let merged = typed::merge(ctx.root, Some(live), Some(applied)).map_err(|e| {
        PatchError::BadRequest(format!("failed to merge the apply configuration: {e}"))
    })?;
    let mut merged = merged.unwrap_or_else(|| Value::Object(Map::new()));
    strip_nulls(&mut merged);

    let set = ctx.field_set(applied).recursive_difference(&ctx.ignored);
    let last = managers.get(id).map(|o| o.set.clone());
    let previous_time = managers.get(id).and_then(|o| o.time.clone());
    managers.insert(
        id.clone(),
        Owned {
            set,
            api_version: ctx.api_version(),
            time: previous_time,
        },
    );
    let new = prune(ctx, merged, managers, last.as_ref());

    let cmp = ctx.compare(live, &new);
    let changed = cmp.changed();
    let mut conflicts: Vec<(ManagerId, FieldSet)> = Vec::new();
    for (other, owned) in managers.iter() {
        if other == id {
            continue;
        }
        let taken = owned.set.intersection(&changed);
        if !taken.is_empty() {
            conflicts.push((other.clone(), taken));
        }
    }
    if !force && !conflicts.is_empty() {
        let list = conflicts
            .iter()
            .flat_map(|(m, set)| set.paths().into_iter().map(move |p| (m.clone(), p)))
            .collect();
        return Ok(Err(list));
    }
    for (other, taken) in &conflicts {
        if let Some(owned) = managers.get_mut(other) {
            owned.set = owned.set.difference(taken);
        }
    }
    if !cmp.removed.is_empty() {
        for (other, owned) in managers.iter_mut() {
            if other != id {
                owned.set = owned.set.difference(&cmp.removed);
            }
        }
    }
    managers.retain(|_, o| !o.set.is_empty());
    Ok(Ok((!values_equal(live, &new)).then_some(new)))
}

/// Removes what `last` (this manager's previous applied set) owned that neither the new
/// configuration nor any other manager owns, the way upstream prunes.
fn prune(ctx: &Ctx, merged: Value, managers: &Managers, last: Option<&FieldSet>) -> Value {
    let Some(last) = last.filter(|l| !l.is_empty()) else {
        return merged;
    };
    let last = ctx.named(last);
    let pruned = ctx.remove(&merged, &last);

    // Put back everything some manager (this one included) still owns.
    let owned = managers
        .values()
        .fold(FieldSet::new(), |acc, o| acc.union(&o.set));
    let merged_set = ctx.named(&ctx.field_set(&merged));
    let pruned_set = ctx.named(&ctx.field_set(&pruned));
    let pruned = ctx.remove(
        &merged,
        &merged_set.difference(&pruned_set.union(&ctx.named(&owned))),
    );

    // Only what the last configuration owned may go.
    let pruned_set = ctx.named(&ctx.field_set(&pruned));
    ctx.remove(
        &merged,
        &merged_set.difference(&pruned_set).intersection(&last),
    )
}

/// Fields whose value the live object still has as the client-side `kubectl apply` last
/// applied them: a `kubectl apply --server-side` may take them over without a conflict.
fn allowed_by_last_applied(ctx: &Ctx, live: &Value) -> Option<FieldSet> {
    let annotation = live
        .get("metadata")?
        .get("annotations")?
        .get(LAST_APPLIED)?
        .as_str()?;
    let last: Value = serde_json::from_str(annotation).ok()?;
    if last.get("apiVersion").and_then(Value::as_str) != Some(ctx.info.api_version().as_str()) {
        return None;
    }
    let set = ctx.field_set(&last);
    let cmp = typed::compare(ctx.root, Some(&last), Some(live));
    Some(
        set.difference(&cmp.modified)
            .difference(&cmp.added)
            .difference(&cmp.removed),
    )
}

/// Keeps the client-side apply annotation, when the object has one, equal to what was
/// applied server-side, so later client-side applies compute the right patch.
fn update_last_applied(result: &mut Value, applied: &Value) {
    let has = result
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty());
    if !has {
        return;
    }
    let mut config = applied.clone();
    if let Some(meta) = config.get_mut("metadata").and_then(Value::as_object_mut) {
        if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            annotations.remove(LAST_APPLIED);
            if annotations.is_empty() {
                meta.remove("annotations");
            }
        }
    }
    let text = format!("{}\n", sorted_json(&config));
    if let Some(annotations) = result
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.insert(LAST_APPLIED.into(), Value::String(text));
    }
}

/// Compact JSON with object keys sorted, as Go encodes maps.
fn sorted_json(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        Value::String(k.clone()),
                        m.get(k).map(sorted_json).unwrap_or_default()
                    )
                })
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(sorted_json).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// An applied `null` means "owned and unset": drop it from the stored object.
fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorted_json_sorts_keys() {
        assert_eq!(
            sorted_json(&json!({"b": 1, "a": [{"d": null, "c": "x"}]})),
            r#"{"a":[{"c":"x","d":null}],"b":1}"#
        );
    }

    #[test]
    fn updates_in_place_as_by_reference() {
        let registry = crate::Registry::builtin();
        let info = registry.by_kind("v1", "Pod").expect("served");
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "x"}]}});
        let created = update_managed_fields(info, None, &pod, "create", "2026-01-01T00:00:00Z");
        let mut changed = created.clone();
        changed["metadata"]["uid"] = json!("u");
        changed["spec"]["containers"][0]["image"] = json!("y");
        for (old, new) in [(None, &pod), (Some(&created), &changed)] {
            for sub in ["", "status"] {
                let by_ref = update_managed_fields_subresource(info, sub, old, new, "m", "t");
                let mut in_place = new.clone();
                update_managed_fields_in_place(info, sub, old, &mut in_place, "m", "t");
                assert_eq!(
                    serde_json::to_string(&in_place).expect("encodes"),
                    serde_json::to_string(&by_ref).expect("encodes")
                );
            }
        }
    }

    #[test]
    fn strip_nulls_recurses() {
        let mut v = json!({"a": null, "b": {"c": null, "d": 1}, "e": [{"f": null}]});
        strip_nulls(&mut v);
        assert_eq!(v, json!({"b": {"d": 1}, "e": [{}]}));
    }
}
