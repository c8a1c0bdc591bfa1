//! Calls into the API machinery that the REST layer makes on reads and writes:
//! defaulting, validation, selectors, tables and patches, in one place.

use krust_machinery::selector::{FieldSelector, Selector};
use krust_machinery::{defaults, table, validation, ApiError, Cause, ResourceInfo};
use serde_json::Value;

/// Defaults, then the zero values of required fields that are still unset (upstream
/// decodes them into Go structs first; filling them after defaulting gives the same result).
/// A custom resource gets only its schema's defaults (upstream decodes it unstructured).
pub fn apply_defaults(info: &ResourceInfo, obj: &mut Value) {
    if !info.ops.is_custom() {
        defaults::apply_defaults(info, obj);
    }
    info.ops.apply_defaults(obj);
    if !info.ops.is_custom() {
        krust_machinery::zeros::fill_required(info, obj);
    }
}

pub fn validate_create(info: &ResourceInfo, obj: &Value) -> Vec<Cause> {
    let mut causes = validation::validate_create(info, obj);
    causes.extend(info.ops.validate(obj, None));
    causes
}

/// Validation of a write to the object (`None`) or to one of its subresources.
pub fn validate_update(
    info: &ResourceInfo,
    subresource: Option<&str>,
    new: &Value,
    old: &Value,
) -> Vec<Cause> {
    let mut causes = match subresource {
        Some("status") => validation::validate_status_update(info, new, old),
        Some("finalize") => validation::validate_namespace_finalizers(new),
        Some(crate::strategy::certificates::APPROVAL) => {
            validation::validate_approval_update(new, old)
        }
        _ => validation::validate_update(info, new, old),
    };
    causes.extend(info.ops.validate(new, Some(old)));
    causes
}

/// Label and field selectors of a list or watch.
pub struct ObjectFilter {
    info: ResourceInfo,
    labels: Option<Selector>,
    fields: Option<FieldSelector>,
}

impl ObjectFilter {
    pub fn new(
        info: &ResourceInfo,
        labels: Option<&str>,
        fields: Option<&str>,
    ) -> Result<ObjectFilter, ApiError> {
        let labels = labels
            .map(Selector::parse)
            .transpose()
            .map_err(ApiError::bad_request)?;
        let fields = fields
            .map(|f| FieldSelector::parse_for(info, f))
            .transpose()
            .map_err(ApiError::bad_request)?;
        Ok(ObjectFilter {
            info: info.clone(),
            labels: labels.filter(|l| !l.is_everything()),
            fields: fields.filter(|f| !f.is_everything()),
        })
    }

    pub fn is_everything(&self) -> bool {
        self.labels.is_none() && self.fields.is_none()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.as_ref().is_none_or(|l| l.matches_object(obj))
            && self
                .fields
                .as_ref()
                .is_none_or(|f| f.matches(&self.info, obj))
    }

    /// Matches a stored encoding, decoding it only when a selector needs it.
    pub fn matches_encoded(&self, encoded: &[u8]) -> bool {
        self.is_everything()
            || serde_json::from_slice::<Value>(encoded).is_ok_and(|v| self.matches(&v))
    }
}

pub fn table(
    info: &ResourceInfo,
    objs: &[Value],
    include_object: Option<&str>,
    rv: &str,
    cont: Option<&str>,
) -> Value {
    let now = time::OffsetDateTime::now_utc();
    table::table(
        info,
        objs,
        include_object.unwrap_or("Metadata"),
        now,
        Some(rv),
        cont,
    )
}

/// Applies a non-apply patch of `content_type` to `current`.
pub fn patch(
    info: &ResourceInfo,
    name: &str,
    content_type: &str,
    current: &Value,
    body: &[u8],
) -> Result<Value, ApiError> {
    use krust_machinery::patch::{patch_object, PatchType};
    let t = PatchType::from_content_type(content_type).map_err(|e| e.to_api_error(info, name))?;
    patch_object(info, t, current, body).map_err(|e| e.to_api_error(info, name))
}
