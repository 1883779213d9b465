//! PATCH (RFC 7644 §3.5.2): `add`, `replace` and `remove` on attributes,
//! sub-attributes and filtered elements of multi-valued ones, applied to a
//! copy of the User so that one bad operation changes nothing.

use serde_json::{Map, Value};

use super::PATCH_SCHEMA;
use super::filter::{self, Filter};
use super::schema::{self, Attr, Bad, USER};

/// A PATCH target: `attr`, `attr.sub`, `attr[filter]` or `attr[filter].sub`.
struct Target {
    attr: &'static Attr,
    filter: Option<Filter>,
    sub: Option<&'static Attr>,
}

fn invalid_path(detail: String) -> Bad {
    ("invalidPath", detail)
}

fn parse_target(path: &str) -> Result<Target, Bad> {
    let (head, filter, tail) = match path.find('[') {
        Some(open) => {
            let close = path
                .rfind(']')
                .filter(|c| *c > open)
                .ok_or_else(|| invalid_path(format!("`{path}` opens `[` without closing it")))?;
            let tail = &path[close + 1..];
            let tail = match tail.strip_prefix('.') {
                Some(t) => Some(t),
                None if tail.is_empty() => None,
                None => return Err(invalid_path(format!("`{path}` has `{tail}` after `]`"))),
            };
            (&path[..open], Some(&path[open + 1..close]), tail)
        }
        None => (path, None, None),
    };
    let attrs = filter::resolve(head, USER).map_err(invalid_path)?;
    let attr = attrs[0];
    let mut sub = attrs.get(1).copied();
    let filter = match filter {
        None => None,
        Some(f) => {
            if sub.is_some() || !attr.multi || attr.sub.is_empty() {
                return Err(invalid_path(format!(
                    "`{path}`: a `[filter]` needs a multi-valued complex attribute"
                )));
            }
            Some(filter::parse(f, attr.sub).map_err(|e| ("invalidFilter", e))?)
        }
    };
    if let Some(t) = tail {
        sub = Some(schema::find(attr.sub, t).ok_or_else(|| {
            invalid_path(format!(
                "no sub-attribute `{t}` of `{}` in `{path}`",
                attr.name
            ))
        })?);
    }
    if attr.read_only {
        return Err((
            "mutability",
            format!("`{}` is readOnly and cannot be changed", attr.name),
        ));
    }
    Ok(Target { attr, filter, sub })
}

/// Apply one operation to `user` (keys in the schema's spelling).
fn apply(
    user: &mut Map<String, Value>,
    op: &str,
    path: Option<&str>,
    value: Option<&Value>,
) -> Result<(), Bad> {
    let Some(path) = path.filter(|p| !p.trim().is_empty()) else {
        if op == "remove" {
            return Err(("noTarget", "remove needs a `path`".into()));
        }
        // No path: the value is an object of attributes (RFC 7644 §3.5.2.1).
        let Some(Value::Object(attrs)) = value else {
            return Err((
                "invalidValue",
                format!("{op} without a `path` needs a `value` object of attributes"),
            ));
        };
        for (k, v) in attrs {
            if k.eq_ignore_ascii_case("schemas") {
                continue;
            }
            apply(user, op, Some(k), Some(v))?;
        }
        return Ok(());
    };
    let target = parse_target(path.trim())?;
    let name = target.attr.name;
    let value = match op {
        "remove" => None,
        _ => Some(value.ok_or_else(|| ("invalidValue", format!("{op} `{path}` needs a `value`")))?),
    };
    match (&target.filter, target.sub) {
        (None, None) => {
            let Some(value) = value else {
                if target.attr.required {
                    return Err((
                        "mutability",
                        format!("`{name}` is required and cannot be removed"),
                    ));
                }
                user.remove(name);
                return Ok(());
            };
            let value = if target.attr.multi && !value.is_array() {
                Value::Array(vec![value.clone()])
            } else {
                value.clone()
            };
            let Some(value) = schema::canonical_value(target.attr, path, value)? else {
                user.remove(name);
                return Ok(());
            };
            match (op, user.get_mut(name)) {
                // add to a multi-valued attribute appends (RFC 7644 §3.5.2.1)
                ("add", Some(Value::Array(have))) => {
                    for v in value.as_array().into_iter().flatten() {
                        if !have.contains(v) {
                            have.push(v.clone());
                        }
                    }
                }
                // add or replace on a singular complex one merges its sub-attributes
                (_, Some(Value::Object(have))) if !target.attr.multi => {
                    if let Value::Object(new) = value {
                        have.extend(new);
                    }
                }
                _ => {
                    user.insert(name.to_string(), value);
                }
            }
        }
        (None, Some(sub)) => {
            let at = format!("{name}.{}", sub.name);
            let parent = user
                .entry(name.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            let slots: Vec<&mut Map<String, Value>> = match parent {
                Value::Object(m) => vec![m],
                Value::Array(items) => items.iter_mut().filter_map(Value::as_object_mut).collect(),
                _ => vec![],
            };
            for slot in slots {
                set_sub(slot, sub, &at, value)?;
            }
            if parent.as_object().is_some_and(Map::is_empty) {
                user.remove(name);
            }
        }
        (Some(f), sub) => {
            let items = user.get_mut(name).and_then(Value::as_array_mut);
            let Some(items) = items else {
                return match op {
                    "remove" => Ok(()),
                    _ => Err((
                        "noTarget",
                        format!("`{path}` matches nothing: `{name}` has no values"),
                    )),
                };
            };
            let hits: Vec<usize> = (0..items.len()).filter(|i| f.matches(&items[*i])).collect();
            if hits.is_empty() && op != "remove" {
                return Err(("noTarget", format!("`{path}` matches no value of `{name}`")));
            }
            for &i in hits.iter().rev() {
                match (sub, value) {
                    (None, None) => {
                        items.remove(i);
                    }
                    (Some(sub), _) => {
                        let at = format!("{name}.{}", sub.name);
                        if let Some(m) = items[i].as_object_mut() {
                            set_sub(m, sub, &at, value)?;
                        }
                    }
                    (None, Some(v)) => {
                        // One element, checked as a one-element array.
                        let v = schema::canonical_value(
                            target.attr,
                            path,
                            Value::Array(vec![v.clone()]),
                        )?
                        .and_then(|a| a.as_array().and_then(|a| a.first().cloned()));
                        match (op, v, items[i].as_object_mut()) {
                            ("add", Some(Value::Object(new)), Some(have)) => have.extend(new),
                            (_, Some(v), _) => items[i] = v,
                            (_, None, _) => {
                                items.remove(i);
                            }
                        }
                    }
                }
            }
            if items.is_empty() {
                user.remove(name);
            }
        }
    }
    Ok(())
}

fn set_sub(
    slot: &mut Map<String, Value>,
    sub: &'static Attr,
    at: &str,
    value: Option<&Value>,
) -> Result<(), Bad> {
    match value {
        None => {
            slot.remove(sub.name);
        }
        Some(v) => match schema::canonical_value(sub, at, v.clone())? {
            Some(v) => {
                slot.insert(sub.name.to_string(), v);
            }
            None => {
                slot.remove(sub.name);
            }
        },
    }
    Ok(())
}

/// Check a PatchOp body and apply its operations to a copy of `user`;
/// the changed copy, or the first refusal.
pub fn patch(user: &Map<String, Value>, body: &Value) -> Result<Map<String, Value>, Bad> {
    let schemas_ok = body["schemas"]
        .as_array()
        .is_some_and(|s| s.iter().any(|v| v == PATCH_SCHEMA));
    if !schemas_ok {
        return Err((
            "invalidSyntax",
            format!("`schemas` must list {PATCH_SCHEMA}"),
        ));
    }
    let ops = match body.get("Operations").or_else(|| body.get("operations")) {
        Some(Value::Array(ops)) if !ops.is_empty() => ops,
        _ => {
            return Err((
                "invalidSyntax",
                "`Operations` must be a non-empty array".into(),
            ));
        }
    };
    let mut copy = user.clone();
    for (i, op) in ops.iter().enumerate() {
        let kind = op["op"].as_str().unwrap_or_default().to_ascii_lowercase();
        if !matches!(kind.as_str(), "add" | "replace" | "remove") {
            return Err((
                "invalidSyntax",
                format!(
                    "Operations[{i}].op is {}; use add, replace or remove",
                    op["op"]
                ),
            ));
        }
        let path = match op.get("path") {
            None | Some(Value::Null) => None,
            Some(Value::String(p)) => Some(p.as_str()),
            Some(other) => {
                return Err(invalid_path(format!(
                    "Operations[{i}].path must be a string, got {other}"
                )));
            }
        };
        apply(&mut copy, &kind, path, op.get("value"))?;
    }
    Ok(copy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user() -> Map<String, Value> {
        json!({
            "schemas": [super::super::USER_SCHEMA],
            "id": "1",
            "userName": "a@b.c",
            "active": true,
            "name": { "givenName": "A", "familyName": "B" },
            "emails": [{ "value": "a@b.c", "type": "work", "primary": true }],
        })
        .as_object()
        .cloned()
        .unwrap()
    }

    fn ops(ops: Value) -> Result<Map<String, Value>, Bad> {
        patch(
            &user(),
            &json!({ "schemas": [PATCH_SCHEMA], "Operations": ops }),
        )
    }

    #[test]
    fn replace_add_and_remove_follow_rfc_7644() {
        let u = ops(json!([{ "op": "Replace", "path": "active", "value": false }])).unwrap();
        assert_eq!(u["active"], false);
        let u =
            ops(json!([{ "op": "replace", "value": { "active": false, "displayName": "Al" } }]))
                .unwrap();
        assert_eq!(
            (&u["active"], &u["displayName"]),
            (&json!(false), &json!("Al"))
        );
        let u = ops(json!([{ "op": "add", "path": "name.middleName", "value": "C" }])).unwrap();
        assert_eq!(
            u["name"],
            json!({ "givenName": "A", "familyName": "B", "middleName": "C" })
        );
        let u = ops(json!([{ "op": "replace", "path": "name", "value": { "givenName": "Z" } }]))
            .unwrap();
        assert_eq!(u["name"]["givenName"], "Z");
        assert_eq!(
            u["name"]["familyName"], "B",
            "replace merges sub-attributes"
        );
        let u = ops(json!([{ "op": "add", "path": "emails", "value": [{ "value": "x@y.z", "type": "home" }] }])).unwrap();
        assert_eq!(u["emails"].as_array().unwrap().len(), 2);
        let u = ops(json!([{ "op": "replace", "path": "emails[type eq \"work\"].value", "value": "n@b.c" }])).unwrap();
        assert_eq!(u["emails"][0]["value"], "n@b.c");
        let u = ops(json!([{ "op": "remove", "path": "emails[type eq \"work\"]" }])).unwrap();
        assert!(!u.contains_key("emails"));
        let u = ops(json!([{ "op": "remove", "path": "name.givenName" }, { "op": "remove", "path": "active" }])).unwrap();
        assert_eq!(u["name"], json!({ "familyName": "B" }));
        assert!(!u.contains_key("active"));
    }

    #[test]
    fn bad_operations_are_refused_by_name_and_change_nothing() {
        let e = |v: Value| ops(v).unwrap_err();
        assert_eq!(
            e(json!([{ "op": "replace", "path": "active", "value": "False" }])).0,
            "invalidValue"
        );
        assert_eq!(e(json!([{ "op": "remove" }])).0, "noTarget");
        assert_eq!(
            e(json!([{ "op": "replace", "path": "id", "value": "2" }])).0,
            "mutability"
        );
        assert_eq!(
            e(json!([{ "op": "remove", "path": "userName" }])).0,
            "mutability"
        );
        assert_eq!(
            e(json!([{ "op": "move", "path": "active" }])).0,
            "invalidSyntax"
        );
        let (t, d) = e(json!([{ "op": "add", "path": "shoeSize", "value": 9 }]));
        assert!(t == "invalidPath" && d.contains("shoeSize"), "{d}");
        assert_eq!(
            e(json!([{ "op": "replace", "path": "emails[type eq \"home\"].value", "value": "x" }]))
                .0,
            "noTarget"
        );
        assert_eq!(e(json!([])).0, "invalidSyntax");
        let no_schema = patch(&user(), &json!({ "Operations": [] })).unwrap_err();
        assert!(no_schema.1.contains("PatchOp"));
    }
}
