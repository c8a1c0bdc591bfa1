//! managedFields bookkeeping on every write that is not itself a server-side apply.

use krust_machinery::object::now_rfc3339;
use krust_machinery::patch;
use krust_machinery::ResourceInfo;
use serde_json::Value;

/// Records the fields `manager` changed from `old` to `obj` (operation Update).
pub fn record_update(
    info: &ResourceInfo,
    subresource: Option<&str>,
    old: Option<&Value>,
    obj: &mut Value,
    manager: &str,
) {
    let now = now_rfc3339();
    let sub = subresource.unwrap_or_default();
    patch::update_managed_fields_in_place(info, sub, old, obj, manager, &now);
}
