//! `ListOptions`: the query parameters of list, watch and deletecollection, decoded and
//! validated as upstream's `meta/internalversion` does before storage sees them.
//!
//! Decoding follows upstream's parameter codec ([`Query`]): booleans are true unless absent,
//! `false` or `0`; integers that do not parse are a 400 with Go's `strconv` message.
//! Validation follows `ValidateListOptions` with the WatchList feature on: the combinations
//! of `resourceVersionMatch`, `sendInitialEvents` and `continue` it forbids are a 422
//! `ListOptions.meta.k8s.io "" is invalid` with one cause each.

use krust_machinery::status::Cause;
use krust_machinery::ApiError;

use crate::request::Query;

/// `resourceVersionMatch` values.
const EXACT: &str = "Exact";
const NOT_OLDER_THAN: &str = "NotOlderThan";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub watch: bool,
    pub allow_watch_bookmarks: bool,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    /// Unset: the server's default (`watch::DEFAULT_TIMEOUT_SECONDS`).
    pub timeout_seconds: Option<i64>,
    /// 0: no limit.
    pub limit: i64,
    pub continue_token: Option<String>,
    pub send_initial_events: Option<bool>,
}

impl ListOptions {
    /// Decodes and validates the options of a request; `watch` is set by the legacy
    /// `/watch/` path, and the `watch` parameter sets it too, as upstream decodes it.
    pub fn from_query(q: &Query, watch: bool) -> Result<ListOptions, ApiError> {
        let owned = |k: &str| q.get(k).map(str::to_string);
        let opts = ListOptions {
            label_selector: owned("labelSelector"),
            field_selector: owned("fieldSelector"),
            watch: watch || q.flag("watch"),
            allow_watch_bookmarks: q.flag("allowWatchBookmarks"),
            resource_version: owned("resourceVersion"),
            resource_version_match: owned("resourceVersionMatch"),
            timeout_seconds: q.int("timeoutSeconds")?,
            limit: q.int("limit")?.unwrap_or(0),
            continue_token: owned("continue"),
            send_initial_events: q.opt_flag("sendInitialEvents"),
        };
        let causes = opts.validate();
        if causes.is_empty() {
            Ok(opts)
        } else {
            Err(ApiError::invalid("meta.k8s.io", "ListOptions", "", causes))
        }
    }

    /// Upstream's `ValidateListOptions` (WatchList on).
    fn validate(&self) -> Vec<Cause> {
        const FIELD: &str = "resourceVersionMatch";
        let mut causes = Vec::new();
        let matched = self.resource_version_match.as_deref();
        if self.watch {
            if self.send_initial_events.is_some() && matched != Some(NOT_OLDER_THAN) {
                causes.push(Cause::forbidden(
                    FIELD,
                    format!("sendInitialEvents requires setting resourceVersionMatch to {NOT_OLDER_THAN}"),
                ));
            }
            if let Some(m) = matched {
                if self.send_initial_events.is_none() {
                    causes.push(Cause::forbidden(
                        FIELD,
                        "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                    ));
                }
                if m != NOT_OLDER_THAN {
                    causes.push(Cause::not_supported(FIELD, m, &[NOT_OLDER_THAN]));
                }
                if self.continue_token.is_some() {
                    causes.push(Cause::forbidden(
                        FIELD,
                        "resourceVersionMatch is forbidden when continue is provided",
                    ));
                }
            }
            return causes;
        }
        if let Some(m) = matched {
            if self.resource_version.is_none() {
                causes.push(Cause::forbidden(
                    FIELD,
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
            if self.continue_token.is_some() {
                causes.push(Cause::forbidden(
                    FIELD,
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
            if m != EXACT && m != NOT_OLDER_THAN {
                causes.push(Cause::not_supported(FIELD, m, &[EXACT, NOT_OLDER_THAN, ""]));
            }
            if m == EXACT && self.resource_version.as_deref() == Some("0") {
                causes.push(Cause::forbidden(
                    FIELD,
                    "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                ));
            }
        }
        if self.send_initial_events.is_some() {
            causes.push(Cause::forbidden(
                "sendInitialEvents",
                "sendInitialEvents is forbidden for list",
            ));
        }
        causes
    }

    /// Whether the list must be served at exactly `resourceVersion`.
    pub fn exact(&self) -> bool {
        self.resource_version_match.as_deref() == Some(EXACT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str, watch: bool) -> Result<ListOptions, ApiError> {
        ListOptions::from_query(&Query::parse(Some(q)), watch)
    }

    fn message(q: &str, watch: bool) -> String {
        parse(q, watch)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn python_spellings_decode() {
        let o = parse(
            "watch=True&allowWatchBookmarks=True&timeoutSeconds=5",
            false,
        )
        .expect("valid");
        assert!(o.watch && o.allow_watch_bookmarks);
        assert_eq!(o.timeout_seconds, Some(5));
        let o = parse("watch=False&allowWatchBookmarks=0", false).expect("valid");
        assert!(!o.watch && !o.allow_watch_bookmarks);
    }

    #[test]
    fn bad_integers_are_go_messages() {
        let e = parse("limit=ten", false).expect_err("bad limit");
        assert_eq!(e.code(), 400);
        assert_eq!(
            e.to_string(),
            "strconv.ParseInt: parsing \"ten\": invalid syntax"
        );
        assert_eq!(
            message("timeoutSeconds=99999999999999999999", true),
            "strconv.ParseInt: parsing \"99999999999999999999\": value out of range"
        );
    }

    #[test]
    fn list_rules() {
        assert!(parse("resourceVersion=5&resourceVersionMatch=Exact", false).is_ok());
        assert!(parse("resourceVersion=0&resourceVersionMatch=NotOlderThan", false).is_ok());
        let e = parse("resourceVersionMatch=Exact", false).expect_err("no rv");
        assert_eq!(e.code(), 422);
        assert_eq!(
            e.to_string(),
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"
        );
        assert_eq!(
            message("resourceVersion=1&resourceVersionMatch=Newest", false),
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Unsupported value: \"Newest\": supported values: \"Exact\", \"NotOlderThan\", \"\""
        );
        assert_eq!(
            message("resourceVersion=0&resourceVersionMatch=Exact", false),
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\""
        );
        assert_eq!(
            message("sendInitialEvents=true", false),
            "ListOptions.meta.k8s.io \"\" is invalid: sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list"
        );
    }

    #[test]
    fn watch_rules() {
        assert!(parse("", true).is_ok());
        assert!(parse(
            "sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true",
            true
        )
        .is_ok());
        assert_eq!(
            message("sendInitialEvents=true", true),
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"
        );
        assert_eq!(
            message("resourceVersionMatch=NotOlderThan", true),
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"
        );
        assert_eq!(
            message("sendInitialEvents=true&resourceVersionMatch=Exact", true),
            "ListOptions.meta.k8s.io \"\" is invalid: [resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan, resourceVersionMatch: Unsupported value: \"Exact\": supported values: \"NotOlderThan\"]"
        );
    }
}
