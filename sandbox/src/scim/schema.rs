//! The User resource the SCIM double serves, described once: `/Schemas`
//! publishes it, and every write, filter and PATCH path is checked against
//! it, so a client sending an attribute or a type the schema does not allow
//! gets a 400 naming it (RFC 7643 §2, §7).

use serde_json::{Map, Value, json};

use super::USER_SCHEMA;

/// An attribute's data type (RFC 7643 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    String,
    Boolean,
    Complex,
    Reference,
    DateTime,
}

impl Type {
    fn as_str(self) -> &'static str {
        match self {
            Type::String => "string",
            Type::Boolean => "boolean",
            Type::Complex => "complex",
            Type::Reference => "reference",
            Type::DateTime => "dateTime",
        }
    }

    /// Compared as text (string, reference, dateTime).
    pub fn textual(self) -> bool {
        matches!(self, Type::String | Type::Reference | Type::DateTime)
    }
}

/// One attribute of the schema (RFC 7643 §7).
#[derive(Debug)]
pub struct Attr {
    pub name: &'static str,
    pub ty: Type,
    pub multi: bool,
    pub required: bool,
    pub case_exact: bool,
    /// `readOnly`: set by the service provider only.
    pub read_only: bool,
    /// `returned: always` (only `id`); else `default`.
    pub always: bool,
    /// `uniqueness: server`.
    pub unique: bool,
    pub sub: &'static [Attr],
    pub canonical: &'static [&'static str],
    pub description: &'static str,
}

const fn attr(name: &'static str, ty: Type, description: &'static str) -> Attr {
    Attr {
        name,
        ty,
        multi: false,
        required: false,
        case_exact: false,
        read_only: false,
        always: false,
        unique: false,
        sub: &[],
        canonical: &[],
        description,
    }
}

const fn string(name: &'static str, description: &'static str) -> Attr {
    attr(name, Type::String, description)
}

const fn read_only(a: Attr) -> Attr {
    Attr {
        read_only: true,
        case_exact: true,
        ..a
    }
}

const NAME: &[Attr] = &[
    string("formatted", "The full name, formatted for display."),
    string("familyName", "The family name."),
    string("givenName", "The given name."),
    string("middleName", "The middle name(s)."),
    string("honorificPrefix", "The honorific prefix, e.g. Ms."),
    string("honorificSuffix", "The honorific suffix, e.g. III."),
];

const EMAIL: &[Attr] = &[
    string("value", "The email address."),
    string("display", "A name for display."),
    Attr {
        canonical: &["work", "home", "other"],
        ..string("type", "work, home or other.")
    },
    attr(
        "primary",
        Type::Boolean,
        "Whether this is the primary address.",
    ),
];

const PHONE: &[Attr] = &[
    string("value", "The phone number."),
    string("display", "A name for display."),
    Attr {
        canonical: &["work", "home", "mobile", "fax", "pager", "other"],
        ..string("type", "work, home, mobile, fax, pager or other.")
    },
    attr(
        "primary",
        Type::Boolean,
        "Whether this is the primary number.",
    ),
];

const META: &[Attr] = &[
    read_only(string("resourceType", "The resource type.")),
    read_only(attr("created", Type::DateTime, "When it was created.")),
    read_only(attr(
        "lastModified",
        Type::DateTime,
        "When it last changed.",
    )),
    read_only(attr("location", Type::Reference, "Its URI.")),
    read_only(string("version", "Its version (a weak ETag).")),
];

/// Common attributes (RFC 7643 §3.1), which the User schema does not list.
const COMMON: &[&str] = &["id", "externalId", "meta"];

/// Every attribute a User may hold: the common ones, then the core ones.
pub static USER: &[Attr] = &[
    Attr {
        always: true,
        unique: true,
        ..read_only(string("id", "The service provider's identifier."))
    },
    Attr {
        case_exact: true,
        ..string("externalId", "The client's identifier.")
    },
    Attr {
        sub: META,
        ..read_only(attr("meta", Type::Complex, "Resource metadata."))
    },
    Attr {
        required: true,
        unique: true,
        ..string("userName", "Unique identifier for the user, to sign in.")
    },
    Attr {
        sub: NAME,
        ..attr("name", Type::Complex, "The components of the user's name.")
    },
    string("displayName", "The name to display."),
    string("nickName", "The casual name."),
    attr("profileUrl", Type::Reference, "The user's online profile."),
    string("title", "The user's title, e.g. Vice President."),
    string(
        "userType",
        "The relationship to the organization, e.g. Employee.",
    ),
    string("preferredLanguage", "Preferred language, e.g. en-US."),
    string("locale", "Default location, e.g. en-US."),
    string("timezone", "Time zone in IANA form, e.g. Europe/Paris."),
    attr("active", Type::Boolean, "Whether the user may sign in."),
    Attr {
        multi: true,
        sub: EMAIL,
        ..attr("emails", Type::Complex, "Email addresses.")
    },
    Attr {
        multi: true,
        sub: PHONE,
        ..attr("phoneNumbers", Type::Complex, "Phone numbers.")
    },
];

/// An attribute of `scope` by name, case-insensitively (RFC 7643 §2.1).
pub fn find<'a>(scope: &'a [Attr], name: &str) -> Option<&'a Attr> {
    scope.iter().find(|a| a.name.eq_ignore_ascii_case(name))
}

fn attr_json(a: &Attr) -> Value {
    let mut v = json!({
        "name": a.name,
        "type": a.ty.as_str(),
        "multiValued": a.multi,
        "description": a.description,
        "required": a.required,
        "caseExact": a.case_exact,
        "mutability": if a.read_only { "readOnly" } else { "readWrite" },
        "returned": if a.always { "always" } else { "default" },
        "uniqueness": if a.unique { "server" } else { "none" },
    });
    if !a.sub.is_empty() {
        v["subAttributes"] = a.sub.iter().map(attr_json).collect();
    }
    if !a.canonical.is_empty() {
        v["canonicalValues"] = json!(a.canonical);
    }
    if a.ty == Type::Reference {
        v["referenceTypes"] = json!(["external"]);
    }
    v
}

/// The User schema resource as `/Schemas` serves it (meta added by the caller).
pub fn user_schema() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
        "id": USER_SCHEMA,
        "name": "User",
        "description": "User Account",
        "attributes": USER
            .iter()
            .filter(|a| !COMMON.contains(&a.name))
            .map(attr_json)
            .collect::<Vec<_>>(),
    })
}

/// A refusal: the `scimType` and a detail naming what is wrong.
pub type Bad = (&'static str, String);

fn invalid(detail: String) -> Bad {
    ("invalidValue", detail)
}

/// One value of `a` (an element, when multi-valued), with its keys set to the
/// schema's spelling.
fn canonical_one(a: &Attr, at: &str, v: Value) -> Result<Value, Bad> {
    let ok = match a.ty {
        Type::String | Type::Reference | Type::DateTime => v.is_string(),
        Type::Boolean => v.is_boolean(),
        Type::Complex => v.is_object(),
    };
    if !ok {
        let what = match a.ty {
            Type::Complex => "complex value (a JSON object)",
            other => other.as_str(),
        };
        return Err(invalid(format!("`{at}` must be a {what}, got {v}")));
    }
    match v {
        Value::Object(map) => Ok(Value::Object(canonical_map(a.sub, at, map)?)),
        other => Ok(other),
    }
}

/// A value for `a`, checked against its type and made canonical. `null`
/// is unassigned (RFC 7643 §2.5) and comes back as `None`.
pub fn canonical_value(a: &Attr, at: &str, v: Value) -> Result<Option<Value>, Bad> {
    match v {
        Value::Null => Ok(None),
        Value::Array(items) if a.multi => items
            .into_iter()
            .filter(|i| !i.is_null())
            .map(|i| canonical_one(a, at, i))
            .collect::<Result<Vec<_>, _>>()
            .map(|items| (!items.is_empty()).then_some(Value::Array(items))),
        other if a.multi => Err(invalid(format!(
            "`{at}` is multi-valued and must be a JSON array, got {other}"
        ))),
        other => canonical_one(a, at, other).map(Some),
    }
}

/// Keys of an object checked against `scope`: unknown ones refused by name,
/// known ones spelled as the schema spells them, `null` ones dropped.
fn canonical_map(
    scope: &[Attr],
    prefix: &str,
    map: Map<String, Value>,
) -> Result<Map<String, Value>, Bad> {
    let mut out = Map::new();
    for (k, v) in map {
        let at = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let Some(a) = find(scope, &k) else {
            return Err(("invalidSyntax", format!("unknown attribute `{at}`")));
        };
        if let Some(v) = canonical_value(a, &at, v)? {
            out.insert(a.name.to_string(), v);
        }
    }
    Ok(out)
}

/// A User as a client sent it (POST, PUT) or as a PATCH left it: `schemas`
/// checked, attributes made canonical, `userName` required.
/// Read-only attributes (`id`, `meta`) are dropped, as RFC 7644 §3.3 says.
pub fn canonical_user(body: Value) -> Result<Map<String, Value>, Bad> {
    let Value::Object(mut map) = body else {
        return Err(("invalidSyntax", "the body must be a JSON object".into()));
    };
    let schemas = map
        .remove("schemas")
        .ok_or(("invalidSyntax", "`schemas` is required".to_string()))?;
    let names: Vec<&str> = schemas
        .as_array()
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !names.contains(&USER_SCHEMA) {
        return Err((
            "invalidSyntax",
            format!("`schemas` must list {USER_SCHEMA}, got {schemas}"),
        ));
    }
    if let Some(other) = names.iter().find(|n| **n != USER_SCHEMA) {
        return Err((
            "invalidSyntax",
            format!("schema {other} is not served here (only {USER_SCHEMA})"),
        ));
    }
    map.retain(|k, _| !k.eq_ignore_ascii_case("id") && !k.eq_ignore_ascii_case("meta"));
    let mut out = canonical_map(USER, "", map)?;
    match out.get("userName").and_then(Value::as_str) {
        Some(n) if !n.trim().is_empty() => {}
        _ => return Err(invalid("`userName` is required".into())),
    }
    out.insert("schemas".into(), json!([USER_SCHEMA]));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_checked_and_spelled_as_the_schema_spells_them() {
        let user = canonical_user(json!({
            "schemas": [USER_SCHEMA],
            "USERNAME": "a@b.c",
            "id": "ignored",
            "name": { "GivenName": "A" },
            "nickName": null,
        }))
        .unwrap();
        assert_eq!(user["userName"], "a@b.c");
        assert_eq!(user["name"]["givenName"], "A");
        assert!(!user.contains_key("id") && !user.contains_key("nickName"));

        let bad = |v: Value| canonical_user(v).unwrap_err().1;
        assert!(bad(json!({ "userName": "x" })).contains("schemas"));
        let e = bad(json!({ "schemas": [USER_SCHEMA], "userName": "x", "shoeSize": 4 }));
        assert!(e.contains("shoeSize"), "{e}");
        let e = bad(json!({ "schemas": [USER_SCHEMA], "userName": "x", "active": "False" }));
        assert!(e.contains("`active` must be a boolean"), "{e}");
        let e = bad(json!({ "schemas": [USER_SCHEMA], "userName": "x", "emails": "x@y" }));
        assert!(e.contains("multi-valued"), "{e}");
        assert!(bad(json!({ "schemas": [USER_SCHEMA] })).contains("userName"));
    }
}
