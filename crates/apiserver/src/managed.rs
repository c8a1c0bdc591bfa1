//! managedFields bookkeeping on every write.

use krust_machinery::ResourceInfo;
use serde_json::Value;

pub fn record_update(_info: &ResourceInfo, _old: Option<&Value>, _obj: &mut Value, _manager: &str) {
}
