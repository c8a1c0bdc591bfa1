//! Which Ingresses are ours: IngressClass selection, and making sure our class exists.
//!
//! An Ingress is served when (in this order, the first that applies decides):
//! 1. it has the legacy annotation `kubernetes.io/ingress.class`: its value names our class
//!    (ingress-nginx lets the annotation win over the field, and so do we);
//! 2. it has `spec.ingressClassName`: that IngressClass has our controller;
//! 3. it has neither: one of our IngressClasses is marked default.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::networking::v1::{Ingress, IngressClass, IngressClassSpec};
use kube::api::{ObjectMeta, PostParams};
use kube::Api;

use crate::IngressError;

/// The annotation that makes an IngressClass the default for Ingresses without a class.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The pre-IngressClass way to pick a controller, still widely used.
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// The IngressClasses that name our controller, as seen in one snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClassFilter {
    /// Names of IngressClasses whose spec.controller is ours, plus our configured name
    /// (so the legacy annotation works before the class object is seen).
    names: BTreeSet<String>,
    /// One of ours is annotated as the default class.
    default: bool,
}

impl ClassFilter {
    pub fn new<'a>(
        class_name: &str,
        controller: &str,
        classes: impl IntoIterator<Item = &'a IngressClass>,
    ) -> ClassFilter {
        let mut filter = ClassFilter::default();
        filter.names.insert(class_name.to_string());
        for class in classes {
            let ours =
                class.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(controller);
            if !ours {
                // A class of that name owned by someone else is theirs, not ours.
                if class.metadata.name.as_deref() == Some(class_name) {
                    filter.names.remove(class_name);
                }
                continue;
            }
            if let Some(name) = &class.metadata.name {
                filter.names.insert(name.clone());
            }
            let is_default = class
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .is_some_and(|v| v == "true");
            filter.default |= is_default;
        }
        filter
    }

    /// Whether this controller serves `ing`.
    pub fn serves(&self, ing: &Ingress) -> bool {
        let legacy = ing
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION));
        if let Some(class) = legacy {
            return self.names.contains(class);
        }
        match ing
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref())
        {
            Some(class) => self.names.contains(class),
            None => self.default,
        }
    }
}

/// The IngressClass we create when it is missing: ours, and the default.
pub fn wanted_class(class_name: &str, controller: &str) -> IngressClass {
    IngressClass {
        metadata: ObjectMeta {
            name: Some(class_name.to_string()),
            annotations: Some([(DEFAULT_CLASS_ANNOTATION.to_string(), "true".to_string())].into()),
            ..Default::default()
        },
        spec: Some(IngressClassSpec {
            controller: Some(controller.to_string()),
            parameters: None,
        }),
    }
}

/// Creates our IngressClass if missing and leaves an existing one alone (an administrator
/// may have changed its default flag on purpose). Retries until the API answers, since
/// the controller may start before the API server is up.
pub async fn ensure_class(
    api: &Api<IngressClass>,
    class_name: &str,
    controller: &str,
) -> Result<(), IngressError> {
    let mut delay = Duration::from_millis(200);
    loop {
        match try_ensure(api, class_name, controller).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, class = class_name, "IngressClass not ensured; retrying");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

async fn try_ensure(
    api: &Api<IngressClass>,
    class_name: &str,
    controller: &str,
) -> Result<(), IngressError> {
    if api.get_opt(class_name).await.map_err(api_error)?.is_some() {
        return Ok(());
    }
    let class = wanted_class(class_name, controller);
    match api.create(&PostParams::default(), &class).await {
        Ok(_) => {
            tracing::info!(class = class_name, "created IngressClass");
            Ok(())
        }
        // Someone else (another replica, an administrator) created it meanwhile.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(api_error(e)),
    }
}

fn api_error(e: kube::Error) -> IngressError {
    IngressError::Api(Box::new(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::networking::v1::IngressSpec;
    use std::collections::BTreeMap;

    fn class(name: &str, controller: &str, default: bool) -> IngressClass {
        let mut c = wanted_class(name, controller);
        if !default {
            c.metadata.annotations = None;
        }
        c
    }

    fn ingress(class: Option<&str>, legacy: Option<&str>) -> Ingress {
        Ingress {
            metadata: ObjectMeta {
                annotations: legacy.map(|l| {
                    BTreeMap::from([(LEGACY_CLASS_ANNOTATION.to_string(), l.to_string())])
                }),
                ..Default::default()
            },
            spec: Some(IngressSpec {
                ingress_class_name: class.map(String::from),
                ..Default::default()
            }),
            status: None,
        }
    }

    const CTRL: &str = "krust.io/ingress";

    #[test]
    fn class_name_selects_by_controller() {
        let classes = [
            class("krust", CTRL, false),
            class("nginx", "k8s.io/ingress-nginx", true),
        ];
        let f = ClassFilter::new("krust", CTRL, &classes);
        assert!(f.serves(&ingress(Some("krust"), None)));
        assert!(!f.serves(&ingress(Some("nginx"), None)));
        assert!(!f.serves(&ingress(Some("missing"), None)));
        // Someone else's default does not make class-less Ingresses ours.
        assert!(!f.serves(&ingress(None, None)));
    }

    #[test]
    fn other_classes_with_our_controller_count() {
        let classes = [class("internal", CTRL, false)];
        let f = ClassFilter::new("krust", CTRL, &classes);
        assert!(f.serves(&ingress(Some("internal"), None)));
    }

    #[test]
    fn classless_ingresses_follow_our_default() {
        let classes = [class("krust", CTRL, true)];
        let f = ClassFilter::new("krust", CTRL, &classes);
        assert!(f.serves(&ingress(None, None)));
        let f = ClassFilter::new("krust", CTRL, &[]);
        assert!(!f.serves(&ingress(None, None)));
    }

    #[test]
    fn legacy_annotation_wins_over_the_field() {
        let classes = [class("krust", CTRL, true)];
        let f = ClassFilter::new("krust", CTRL, &classes);
        assert!(f.serves(&ingress(None, Some("krust"))));
        assert!(!f.serves(&ingress(None, Some("nginx"))));
        assert!(!f.serves(&ingress(Some("krust"), Some("nginx"))));
        assert!(f.serves(&ingress(Some("nginx"), Some("krust"))));
    }

    #[test]
    fn our_name_owned_by_another_controller_is_not_ours() {
        let classes = [class("krust", "someone.else/ingress", true)];
        let f = ClassFilter::new("krust", CTRL, &classes);
        assert!(!f.serves(&ingress(Some("krust"), None)));
        assert!(!f.serves(&ingress(None, Some("krust"))));
        assert!(!f.serves(&ingress(None, None)));
    }

    #[test]
    fn wanted_class_is_default_and_ours() {
        let c = wanted_class("krust", CTRL);
        assert_eq!(c.metadata.name.as_deref(), Some("krust"));
        let f = ClassFilter::new("krust", CTRL, [&c]);
        assert!(f.serves(&ingress(None, None)));
    }
}
