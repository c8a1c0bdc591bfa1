//! `metadata.managedFields`: decoding the entries into one field set per manager, and
//! encoding them back in upstream's order.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::fieldpath::FieldSet;

/// Who owns a set of fields: a manager name, the kind of write, and where it wrote.
/// `Apply` managers are one identity across API versions; `Update` managers are per version.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ManagerId {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub subresource: String,
}

impl ManagerId {
    pub fn apply(manager: &str, subresource: &str) -> Self {
        ManagerId {
            manager: manager_name(manager),
            operation: "Apply".into(),
            api_version: String::new(),
            subresource: subresource.into(),
        }
    }

    pub fn update(manager: &str, api_version: &str, subresource: &str) -> Self {
        ManagerId {
            manager: manager_name(manager),
            operation: "Update".into(),
            api_version: api_version.into(),
            subresource: subresource.into(),
        }
    }

    pub fn is_apply(&self) -> bool {
        self.operation == "Apply"
    }
}

/// Upstream records writers without a name as `unknown`.
fn manager_name(manager: &str) -> String {
    if manager.is_empty() {
        "unknown".into()
    } else {
        manager.into()
    }
}

/// The fields one manager owns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Owned {
    pub set: FieldSet,
    /// The API version the fields were written with.
    pub api_version: String,
    /// When the manager last changed the object (RFC 3339).
    pub time: Option<String>,
}

pub type Managers = BTreeMap<ManagerId, Owned>;

/// The managers recorded in `obj`'s `metadata.managedFields`: `None` when the field is
/// absent, an error when an entry is malformed.
pub fn decode(obj: &Value) -> Result<Option<Managers>, String> {
    let Some(entries) = obj.get("metadata").and_then(|m| m.get("managedFields")) else {
        return Ok(None);
    };
    if entries.is_null() {
        return Ok(None);
    }
    let Value::Array(entries) = entries else {
        return Err("metadata.managedFields must be a list".into());
    };
    let mut managers = Managers::new();
    for (i, entry) in entries.iter().enumerate() {
        let text = |k: &str| {
            entry
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let operation = text("operation");
        if operation != "Apply" && operation != "Update" {
            return Err(format!(
                "managed fields entry {i}: operation must be `Apply` or `Update`"
            ));
        }
        let api_version = text("apiVersion");
        if api_version.is_empty() {
            return Err(format!(
                "managed fields entry {i}: apiVersion must not be empty"
            ));
        }
        match text("fieldsType").as_str() {
            "FieldsV1" => {}
            "" => return Err(format!("managed fields entry {i}: missing fieldsType")),
            other => {
                return Err(format!(
                    "managed fields entry {i}: invalid fieldsType {other:?}"
                ))
            }
        }
        let set = match entry.get("fieldsV1") {
            None | Some(Value::Null) => FieldSet::new(),
            Some(v) => {
                FieldSet::from_fields_v1(v).map_err(|e| format!("managed fields entry {i}: {e}"))?
            }
        };
        let id = ManagerId {
            manager: text("manager"),
            api_version: if operation == "Apply" {
                String::new()
            } else {
                api_version.clone()
            },
            operation,
            subresource: text("subresource"),
        };
        let time = entry
            .get("time")
            .and_then(Value::as_str)
            .map(str::to_string);
        managers.insert(
            id,
            Owned {
                set,
                api_version,
                time,
            },
        );
    }
    Ok(Some(managers))
}

/// Whether `obj` asks for its managed fields to be cleared: `[]` or `[{}]`.
pub fn is_reset(obj: &Value) -> bool {
    match obj.get("metadata").and_then(|m| m.get("managedFields")) {
        Some(Value::Array(entries)) => match entries.as_slice() {
            [] => true,
            [only] => only.as_object().is_some_and(Map::is_empty),
            _ => false,
        },
        _ => false,
    }
}

fn unix_seconds(time: Option<&str>) -> i64 {
    time.and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        .map(|t| t.unix_timestamp())
        .unwrap_or(0)
}

/// The `managedFields` list, sorted as upstream sorts it: `Apply` before `Update`, then by
/// time, manager, API version and subresource. `None` when there is nothing to record.
pub fn encode(managers: &Managers) -> Option<Value> {
    let mut entries: Vec<(&ManagerId, &Owned)> =
        managers.iter().filter(|(_, o)| !o.set.is_empty()).collect();
    if entries.is_empty() {
        return None;
    }
    entries.sort_by(|(a, ao), (b, bo)| {
        a.operation
            .cmp(&b.operation)
            .then_with(|| unix_seconds(ao.time.as_deref()).cmp(&unix_seconds(bo.time.as_deref())))
            .then_with(|| a.manager.cmp(&b.manager))
            .then_with(|| ao.api_version.cmp(&bo.api_version))
            .then_with(|| a.subresource.cmp(&b.subresource))
    });
    let list = entries
        .into_iter()
        .map(|(id, owned)| {
            let mut e = json!({"manager": id.manager, "operation": id.operation, "apiVersion": owned.api_version});
            if let Some(t) = &owned.time {
                e["time"] = json!(t);
            }
            e["fieldsType"] = json!("FieldsV1");
            e["fieldsV1"] = owned.set.to_fields_v1();
            if !id.subresource.is_empty() {
                e["subresource"] = json!(id.subresource);
            }
            e
        })
        .collect();
    Some(Value::Array(list))
}

/// Upstream keeps at most this many `Update` managers; older ones merge into one.
const MAX_UPDATE_MANAGERS: usize = 10;
const ANCIENT: &str = "ancient-changes";

/// Merges the oldest `Update` managers into `ancient-changes` until at most ten are left.
pub fn cap_update_managers(managers: &mut Managers) {
    let mut updaters: Vec<ManagerId> = managers
        .keys()
        .filter(|id| !id.is_apply())
        .cloned()
        .collect();
    if updaters.len() <= MAX_UPDATE_MANAGERS {
        return;
    }
    updaters.sort_by(|a, b| {
        let ta = unix_seconds(managers.get(a).and_then(|o| o.time.as_deref()));
        let tb = unix_seconds(managers.get(b).and_then(|o| o.time.as_deref()));
        ta.cmp(&tb).then_with(|| a.cmp(b))
    });
    let mut remaining = updaters.len();
    let mut first_of_version: BTreeMap<String, ManagerId> = BTreeMap::new();
    for id in updaters {
        if remaining <= MAX_UPDATE_MANAGERS {
            break;
        }
        let Some(owned) = managers.get(&id).cloned() else {
            continue;
        };
        let bucket = ManagerId::update(ANCIENT, &owned.api_version, "");
        match first_of_version.get(&owned.api_version) {
            Some(first) => {
                if !managers.contains_key(&bucket) {
                    if let Some(first_owned) = managers.remove(first) {
                        managers.insert(bucket.clone(), first_owned);
                    }
                }
                if let Some(b) = managers.get_mut(&bucket) {
                    b.set = owned.set.union(&b.set);
                    b.time = owned.time.clone();
                }
                managers.remove(&id);
                remaining -= 1;
            }
            None => {
                first_of_version.insert(owned.api_version.clone(), id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::fieldpath::PathElement;

    fn owned(field: &str, time: &str) -> Owned {
        let mut set = FieldSet::new();
        set.insert(&[PathElement::Field(field.into())]);
        Owned {
            set,
            api_version: "v1".into(),
            time: Some(time.into()),
        }
    }

    #[test]
    fn roundtrip_and_order() {
        let mut m = Managers::new();
        m.insert(
            ManagerId::update("b", "v1", ""),
            owned("x", "2024-01-01T00:00:02Z"),
        );
        m.insert(
            ManagerId::update("a", "v1", "status"),
            owned("y", "2024-01-01T00:00:02Z"),
        );
        m.insert(
            ManagerId::update("z", "v1", ""),
            owned("w", "2024-01-01T00:00:01Z"),
        );
        m.insert(
            ManagerId::apply("kubectl", ""),
            owned("v", "2024-01-01T00:00:09Z"),
        );
        let encoded = encode(&m).expect("entries");
        let order: Vec<&str> = encoded
            .as_array()
            .expect("list")
            .iter()
            .map(|e| e["manager"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(order, ["kubectl", "z", "a", "b"]);
        assert_eq!(encoded[0]["operation"], "Apply");
        assert_eq!(encoded[0]["apiVersion"], "v1");
        assert_eq!(encoded[2]["subresource"], "status");
        assert!(encoded[0].get("subresource").is_none());
        assert_eq!(encoded[0]["fieldsV1"], json!({"f:v": {}}));
        let obj = json!({"metadata": {"managedFields": encoded}});
        assert_eq!(decode(&obj), Ok(Some(m)));
        assert_eq!(decode(&json!({"metadata": {}})), Ok(None));
        assert_eq!(encode(&Managers::new()), None);
    }

    #[test]
    fn decode_rejects_bad_entries() {
        let bad = [
            json!({"manager": "a", "operation": "Delete", "apiVersion": "v1", "fieldsType": "FieldsV1"}),
            json!({"manager": "a", "operation": "Update", "fieldsType": "FieldsV1"}),
            json!({"manager": "a", "operation": "Update", "apiVersion": "v1"}),
            json!({"manager": "a", "operation": "Update", "apiVersion": "v1", "fieldsType": "FieldsV2"}),
            json!({"manager": "a", "operation": "Update", "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {"x": {}}}),
        ];
        for entry in bad {
            assert!(decode(&json!({"metadata": {"managedFields": [entry]}})).is_err());
        }
        assert!(decode(&json!({"metadata": {"managedFields": {}}})).is_err());
        assert!(is_reset(&json!({"metadata": {"managedFields": []}})));
        assert!(is_reset(&json!({"metadata": {"managedFields": [{}]}})));
        assert!(!is_reset(&json!({"metadata": {}})));
    }

    #[test]
    fn caps_update_managers() {
        let mut m = Managers::new();
        for i in 0..12 {
            m.insert(
                ManagerId::update(&format!("m{i:02}"), "v1", ""),
                owned(&format!("f{i}"), &format!("2024-01-01T00:00:{i:02}Z")),
            );
        }
        m.insert(
            ManagerId::apply("kubectl", ""),
            owned("a", "2024-01-01T00:00:00Z"),
        );
        cap_update_managers(&mut m);
        let updaters: Vec<&str> = m
            .keys()
            .filter(|k| !k.is_apply())
            .map(|k| k.manager.as_str())
            .collect();
        assert_eq!(updaters.len(), 10);
        assert!(updaters.contains(&ANCIENT));
        assert!(
            !updaters.contains(&"m00") && !updaters.contains(&"m01") && !updaters.contains(&"m02")
        );
        let ancient = &m[&ManagerId::update(ANCIENT, "v1", "")];
        for f in ["f0", "f1", "f2"] {
            assert!(ancient.set.has(&[PathElement::Field(f.into())]));
        }
        assert!(m.contains_key(&ManagerId::apply("kubectl", "")));
    }
}
