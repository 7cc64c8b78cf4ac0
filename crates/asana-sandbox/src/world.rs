//! The sandbox's Asana: every object as the JSON Asana would return in full, by gid, plus the
//! log of changes that webhooks and `/events` report.

use std::collections::BTreeMap;

use chrono::{SecondsFormat, Utc};
use serde_json::{Map, Value, json};

/// One change to a watched resource, in the compact shape of Asana's events.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Position in the change log, from 1.
    pub seq: u64,
    /// The compact event, as webhooks and `/events` deliver it.
    pub event: Value,
    /// The gids an event about this resource bubbles up to (itself, its parents, its projects).
    pub scope: Vec<String>,
}

/// All objects and the change log.
#[derive(Debug, Default)]
pub struct World {
    objects: BTreeMap<String, Value>,
    next_gid: u64,
    changes: Vec<Change>,
}

impl World {
    /// A new gid, numeric like Asana's.
    pub fn new_gid(&mut self) -> String {
        self.next_gid += 1;
        (1_200_000_000_000_000 + self.next_gid).to_string()
    }

    /// Stores `object` (which must carry `resource_type`) under a new gid and returns it.
    pub fn insert(&mut self, mut object: Map<String, Value>) -> Value {
        let gid = self.new_gid();
        object.insert("gid".into(), Value::String(gid.clone()));
        let value = Value::Object(object);
        self.objects.insert(gid, value.clone());
        value
    }

    pub fn get(&self, gid: &str) -> Option<&Value> {
        self.objects.get(gid)
    }

    /// The object `gid` if it has `resource_type`.
    pub fn get_typed(&self, gid: &str, resource_type: &str) -> Option<&Value> {
        self.objects
            .get(gid)
            .filter(|o| o["resource_type"] == resource_type)
    }

    pub fn get_mut(&mut self, gid: &str) -> Option<&mut Value> {
        self.objects.get_mut(gid)
    }

    pub fn remove(&mut self, gid: &str) -> Option<Value> {
        self.objects.remove(gid)
    }

    /// Every object of `resource_type` matching `keep`, in gid (creation) order.
    pub fn all<'a>(
        &'a self,
        resource_type: &'a str,
        keep: impl Fn(&Value) -> bool + 'a,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects
            .values()
            .filter(move |o| o["resource_type"] == resource_type && keep(o))
    }

    /// Records a change made by `user_gid` to `resource`, bubbling to `scope`, and returns it.
    pub fn record(
        &mut self,
        user_gid: Option<&str>,
        action: &str,
        resource: &Value,
        parent: Option<&Value>,
        change: Option<Value>,
        scope: Vec<String>,
    ) -> Change {
        let event = json!({
            "user": user_gid.map(|gid| json!({"gid": gid, "resource_type": "user"})),
            "created_at": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            "action": action,
            "resource": compact_ref(resource),
            "parent": parent.map(compact_ref),
            "change": change,
        });
        let change = Change {
            seq: self.changes.len() as u64 + 1,
            event,
            scope,
        };
        self.changes.push(change.clone());
        change
    }

    /// Changes after `seq` that concern `gid`.
    pub fn changes_since(&self, seq: u64, gid: &str) -> impl Iterator<Item = &Change> {
        let start = usize::try_from(seq)
            .unwrap_or(usize::MAX)
            .min(self.changes.len());
        self.changes[start..]
            .iter()
            .filter(move |c| c.scope.iter().any(|s| s == gid))
    }

    /// The newest change's position (0 when nothing changed yet).
    pub fn last_seq(&self) -> u64 {
        self.changes.len() as u64
    }
}

/// `{gid, resource_type, resource_subtype?}`: how events and references name a resource.
pub fn compact_ref(object: &Value) -> Value {
    let mut reference = json!({"gid": object["gid"], "resource_type": object["resource_type"]});
    if let Some(subtype) = object.get("resource_subtype") {
        reference["resource_subtype"] = subtype.clone();
    }
    reference
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_bubble_to_their_scope_only() {
        let mut world = World::default();
        let task = world.insert(
            json!({"resource_type": "task", "name": "t"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        let gid = task["gid"].as_str().unwrap_or_default().to_owned();
        world.record(
            None,
            "changed",
            &task,
            None,
            None,
            vec![gid.clone(), "p1".into()],
        );
        assert_eq!(world.changes_since(0, "p1").count(), 1);
        assert_eq!(world.changes_since(0, "p2").count(), 0);
        assert_eq!(world.changes_since(1, &gid).count(), 0);
    }
}
