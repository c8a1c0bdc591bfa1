//! DefaultIngressClass, as upstream's plugin: an Ingress created without
//! `spec.ingressClassName` and without the legacy `kubernetes.io/ingress.class` annotation
//! gets the class annotated `ingressclass.kubernetes.io/is-default-class: "true"`; of several
//! such classes, the newest (by creationTimestamp, the first name among equals). Upstream
//! reads the classes from an informer; [`classes_for`] reads them from the store before
//! admission, so [`admit`] itself is pure.

use krust_machinery::validation::INGRESS_CLASS_ANNOTATION;
use krust_machinery::{object, ResourceInfo};
use serde_json::Value;

use crate::rest::Rest;

pub const PLUGIN_NAME: &str = "DefaultIngressClass";
/// The annotation that marks an IngressClass as the cluster's default.
pub const IS_DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

fn is_ingress(info: &ResourceInfo) -> bool {
    (info.group, info.kind) == ("networking.k8s.io", "Ingress")
}

/// Whether an Ingress names no class at all: no `spec.ingressClassName` (even `""` counts
/// as named) and no legacy annotation (of any value).
fn names_no_class(ingress: &Value) -> bool {
    let class = ingress.pointer("/spec/ingressClassName");
    let annotation = ingress
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(INGRESS_CLASS_ANNOTATION));
    class.is_none_or(Value::is_null) && annotation.is_none()
}

fn is_default(class: &Value) -> bool {
    class
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(IS_DEFAULT_CLASS_ANNOTATION))
        .and_then(Value::as_str)
        == Some("true")
}

/// The name of the default class among `classes`: the newest of those marked default.
pub fn default_class(classes: &[Value]) -> Option<&str> {
    classes
        .iter()
        .filter(|c| is_default(c))
        .filter_map(|c| {
            let created = object::meta_str(c, "creationTimestamp").and_then(object::parse_time);
            object::name(c).map(|n| (created, n))
        })
        .max_by(|(ta, na), (tb, nb)| ta.cmp(tb).then_with(|| nb.cmp(na)))
        .map(|(_, name)| name)
}

/// Sets the default class on an Ingress being created that names none.
pub fn admit(ingress: &mut Value, classes: &[Value]) {
    if !names_no_class(ingress) {
        return;
    }
    let Some(name) = default_class(classes) else {
        return;
    };
    let name = Value::String(name.to_string());
    if let Some(spec) = ingress.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("ingressClassName".into(), name);
    } else if let Some(obj) = ingress.as_object_mut() {
        obj.insert(
            "spec".into(),
            serde_json::json!({ "ingressClassName": name }),
        );
    }
}

/// The stored IngressClasses when `obj` is an Ingress that names no class; nothing
/// otherwise, or when the store cannot be read (the Ingress is then left without a class).
pub async fn classes_for(rest: &Rest, info: &ResourceInfo, obj: &Value) -> Vec<Value> {
    if !is_ingress(info) || !names_no_class(obj) {
        return Vec::new();
    }
    let Some(classes) = rest
        .registry
        .lookup("networking.k8s.io", "v1", "ingressclasses")
    else {
        return Vec::new();
    };
    let Ok(list) = rest.store.list(&classes.key_prefix(), None, 0).await else {
        return Vec::new();
    };
    list.items
        .iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use krust_machinery::codec::FieldValidation;
    use krust_machinery::Registry;
    use krust_store::memory::MemoryStore;
    use serde_json::json;

    use super::*;
    use crate::alloc::Allocators;
    use crate::cache::Cache;
    use crate::request::{Query, ResourcePath};
    use crate::rest::WriteCtx;

    fn class(name: &str, created: &str, default: Option<&str>) -> Value {
        let mut c = json!({"metadata": {"name": name, "creationTimestamp": created},
            "spec": {"controller": "example.com/c"}});
        if let Some(d) = default {
            c["metadata"]["annotations"] = json!({ IS_DEFAULT_CLASS_ANNOTATION: d });
        }
        c
    }

    fn ingress() -> Value {
        json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}})
    }

    #[test]
    fn picks_the_one_default() {
        let classes = [
            class("a", "2024-01-01T00:00:00Z", None),
            class("b", "2024-01-02T00:00:00Z", Some("false")),
            class("c", "2024-01-01T00:00:00Z", Some("true")),
        ];
        let mut ing = ingress();
        admit(&mut ing, &classes);
        assert_eq!(ing["spec"]["ingressClassName"], "c");
        // None marked default: nothing set.
        let mut ing = ingress();
        admit(&mut ing, &classes[..2]);
        assert!(ing["spec"].get("ingressClassName").is_none());
    }

    #[test]
    fn of_several_defaults_the_newest_then_the_first_name() {
        let classes = [
            class("old", "2024-01-01T00:00:00Z", Some("true")),
            class("new-b", "2024-03-01T00:00:00Z", Some("true")),
            class("new-a", "2024-03-01T00:00:00Z", Some("true")),
            class("mid", "2024-02-01T00:00:00Z", Some("true")),
        ];
        assert_eq!(default_class(&classes), Some("new-a"));
        assert_eq!(default_class(&classes[..2]), Some("new-b"));
        assert_eq!(default_class(&[]), None);
    }

    #[test]
    fn a_named_class_or_the_legacy_annotation_is_kept() {
        let classes = [class("d", "2024-01-01T00:00:00Z", Some("true"))];
        let mut named = ingress();
        named["spec"]["ingressClassName"] = json!("mine");
        admit(&mut named, &classes);
        assert_eq!(named["spec"]["ingressClassName"], "mine");
        // An empty name is a choice too, as upstream (a non-nil pointer).
        let mut empty = ingress();
        empty["spec"]["ingressClassName"] = json!("");
        admit(&mut empty, &classes);
        assert_eq!(empty["spec"]["ingressClassName"], "");
        let mut legacy = ingress();
        legacy["metadata"]["annotations"] = json!({ INGRESS_CLASS_ANNOTATION: "" });
        admit(&mut legacy, &classes);
        assert!(legacy["spec"].get("ingressClassName").is_none());
    }

    /// Through the REST layer on a memory store: classes are read from the store at create.
    #[tokio::test]
    async fn create_reads_classes_from_the_store() {
        let store = Arc::new(MemoryStore::new());
        let registry = Arc::new(Registry::builtin());
        let shared = Arc::new(krust_machinery::registry::SharedRegistry::new(
            Registry::builtin(),
        ));
        let cache = Cache::new();
        let rest = Rest {
            registry: shared.clone(),
            store: store.clone(),
            cache: cache.clone(),
            alloc: Allocators::new(store, "10.96.0.0/12").expect("cidr"),
            admission: Arc::new(crate::admission::webhooks::DynamicAdmission::new(
                shared, cache,
            )),
        };
        let query = Query::default();
        let ctx = WriteCtx {
            query: &query,
            manager: "test".into(),
            dry_run: false,
            validation: FieldValidation::Strict,
            applied: false,
            who: None,
        };
        let create = |plural: &str, namespace: Option<&str>, obj: Value| {
            let info = registry
                .resources()
                .iter()
                .find(|r| r.plural == plural)
                .expect("served");
            let rp = ResourcePath {
                info,
                namespace: namespace.map(str::to_string),
                name: None,
                subresource: None,
                legacy_watch: false,
            };
            let rest = &rest;
            let ctx = &ctx;
            async move {
                let reply = rest.create(&rp, obj, ctx).await.expect("created");
                serde_json::from_slice::<Value>(&reply.body).expect("json")
            }
        };
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}});
        create("namespaces", None, ns).await;
        for (name, default) in [("plain", "false"), ("nginx", "true")] {
            let ic = json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                "metadata": {"name": name, "annotations": {IS_DEFAULT_CLASS_ANNOTATION: default}},
                "spec": {"controller": "example.com/ingress"}});
            create("ingressclasses", None, ic).await;
        }
        let mut ing = ingress();
        ing["apiVersion"] = json!("networking.k8s.io/v1");
        ing["kind"] = json!("Ingress");
        let stored = create("ingresses", Some("default"), ing).await;
        assert_eq!(stored["spec"]["ingressClassName"], "nginx", "{stored}");
        assert_eq!(stored["status"], json!({"loadBalancer": {}}));
    }
}
