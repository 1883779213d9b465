//! SCIM filters (RFC 7644 §3.4.2.2) and attribute paths, parsed against the
//! schema so that a filter naming an attribute the User has not gets a 400
//! `invalidFilter` naming it, as a strict service provider answers.
//!
//! Supported: `eq ne co sw ew gt ge lt le pr`, `and`, `or`, `not (...)`,
//! parentheses, value paths (`emails[type eq "work"]`), sub-attributes
//! (`name.givenName`) and the core schema's URN prefix.

use serde_json::Value;

use super::USER_SCHEMA;
use super::schema::{Attr, Type, find};

/// A parsed filter.
#[derive(Debug)]
pub enum Filter {
    /// `attr pr`
    Present(Vec<&'static Attr>),
    /// `attr op value`
    Compare(Vec<&'static Attr>, Op, Value),
    /// `attr[filter]`: some element of the multi-valued `attr` matches.
    Value(&'static Attr, Box<Filter>),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    fn parse(word: &str) -> Option<Self> {
        Some(match word.to_ascii_lowercase().as_str() {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "co" => Op::Co,
            "sw" => Op::Sw,
            "ew" => Op::Ew,
            "gt" => Op::Gt,
            "ge" => Op::Ge,
            "lt" => Op::Lt,
            "le" => Op::Le,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    OpenBracket,
    CloseBracket,
    Str(String),
    Word(String),
}

fn tokens(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' | ')' | '[' | ']' => {
                out.push(match c {
                    '(' => Token::Open,
                    ')' => Token::Close,
                    '[' => Token::OpenBracket,
                    _ => Token::CloseBracket,
                });
                i += 1;
            }
            '"' => {
                let start = i;
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if i >= chars.len() {
                    return Err(format!("unterminated string in `{text}`"));
                }
                i += 1;
                let literal: String = chars[start..i].iter().collect();
                let s = serde_json::from_str::<String>(&literal)
                    .map_err(|e| format!("bad string literal {literal}: {e}"))?;
                out.push(Token::Str(s));
            }
            _ => {
                let start = i;
                while i < chars.len() && !chars[i].is_whitespace() && !"()[]\"".contains(chars[i]) {
                    i += 1;
                }
                out.push(Token::Word(chars[start..i].iter().collect()));
            }
        }
    }
    Ok(out)
}

/// An attribute path (`userName`, `name.givenName`, with or without the
/// core schema's URN) resolved in `scope`.
pub fn resolve(path: &str, scope: &'static [Attr]) -> Result<Vec<&'static Attr>, String> {
    let mut rest = path;
    let prefix = format!("{USER_SCHEMA}:");
    if rest.len() > prefix.len() && rest[..prefix.len()].eq_ignore_ascii_case(&prefix) {
        rest = &rest[prefix.len()..];
    } else if rest.to_ascii_lowercase().starts_with("urn:") {
        return Err(format!(
            "`{path}` names a schema not served here (only {USER_SCHEMA})"
        ));
    }
    let mut attrs = Vec::new();
    let mut scope = scope;
    for name in rest.split('.') {
        let a = find(scope, name).ok_or_else(|| {
            if attrs.is_empty() {
                format!("no attribute `{name}` in `{path}`")
            } else {
                format!("no sub-attribute `{name}` in `{path}`")
            }
        })?;
        attrs.push(a);
        scope = a.sub;
    }
    if attrs.len() > 2 {
        return Err(format!("`{path}` goes deeper than a sub-attribute"));
    }
    Ok(attrs)
}

struct Parser<'t> {
    tokens: &'t [Token],
    pos: usize,
    text: &'t str,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
    }

    fn expect(&mut self, want: Token, what: &str) -> Result<(), String> {
        match self.next() {
            Some(t) if t == want => Ok(()),
            other => Err(format!(
                "expected {what} in `{}`, found {}",
                self.text,
                describe(other.as_ref())
            )),
        }
    }

    fn or(&mut self, scope: &'static [Attr]) -> Result<Filter, String> {
        let mut left = self.and(scope)?;
        while self.keyword("or") {
            self.pos += 1;
            left = Filter::Or(Box::new(left), Box::new(self.and(scope)?));
        }
        Ok(left)
    }

    fn and(&mut self, scope: &'static [Attr]) -> Result<Filter, String> {
        let mut left = self.unary(scope)?;
        while self.keyword("and") {
            self.pos += 1;
            left = Filter::And(Box::new(left), Box::new(self.unary(scope)?));
        }
        Ok(left)
    }

    fn unary(&mut self, scope: &'static [Attr]) -> Result<Filter, String> {
        if self.keyword("not") {
            self.pos += 1;
            self.expect(Token::Open, "`(` after `not`")?;
            let inner = self.or(scope)?;
            self.expect(Token::Close, "`)`")?;
            return Ok(Filter::Not(Box::new(inner)));
        }
        if self.peek() == Some(&Token::Open) {
            self.pos += 1;
            let inner = self.or(scope)?;
            self.expect(Token::Close, "`)`")?;
            return Ok(inner);
        }
        self.attr_exp(scope)
    }

    fn attr_exp(&mut self, scope: &'static [Attr]) -> Result<Filter, String> {
        let path = match self.next() {
            Some(Token::Word(w)) => w,
            other => {
                return Err(format!(
                    "expected an attribute in `{}`, found {}",
                    self.text,
                    describe(other.as_ref())
                ));
            }
        };
        let attrs = resolve(&path, scope)?;
        if self.peek() == Some(&Token::OpenBracket) {
            let a = attrs[attrs.len() - 1];
            if attrs.len() > 1 || !a.multi || a.sub.is_empty() {
                return Err(format!(
                    "`{path}[...]` needs a multi-valued complex attribute"
                ));
            }
            self.pos += 1;
            let inner = self.or(a.sub)?;
            self.expect(Token::CloseBracket, "`]`")?;
            return Ok(Filter::Value(a, Box::new(inner)));
        }
        let op_word = match self.next() {
            Some(Token::Word(w)) => w,
            other => {
                return Err(format!(
                    "expected an operator after `{path}` in `{}`, found {}",
                    self.text,
                    describe(other.as_ref())
                ));
            }
        };
        if op_word.eq_ignore_ascii_case("pr") {
            return Ok(Filter::Present(attrs));
        }
        let op = Op::parse(&op_word).ok_or_else(|| {
            format!("`{op_word}` is not a filter operator (eq ne co sw ew gt ge lt le pr)")
        })?;
        let value = match self.next() {
            Some(Token::Str(s)) => Value::String(s),
            Some(Token::Word(w)) => serde_json::from_str::<Value>(&w)
                .ok()
                .filter(|v| !v.is_string() && !v.is_array() && !v.is_object())
                .ok_or_else(|| format!("`{w}` is not a value: quote strings, e.g. \"{w}\""))?,
            other => {
                return Err(format!(
                    "expected a value after `{path} {op_word}`, found {}",
                    describe(other.as_ref())
                ));
            }
        };
        let leaf = leaf_type(&attrs);
        let fits = match (&value, leaf) {
            (Value::Null, _) => matches!(op, Op::Eq | Op::Ne),
            (Value::Bool(_), Type::Boolean) => matches!(op, Op::Eq | Op::Ne),
            (Value::String(_), t) => t.textual(),
            _ => false,
        };
        if !fits {
            return Err(format!(
                "`{path} {op_word} {value}` compares a {} attribute with {value}",
                match leaf {
                    Type::Boolean => "boolean",
                    Type::Complex => "complex",
                    _ => "text",
                }
            ));
        }
        Ok(Filter::Compare(attrs, op, value))
    }
}

/// The type compared: a complex multi-valued attribute compares its `value`.
fn leaf_type(attrs: &[&'static Attr]) -> Type {
    let a = attrs[attrs.len() - 1];
    match find(a.sub, "value") {
        Some(v) if a.ty == Type::Complex => v.ty,
        _ => a.ty,
    }
}

fn describe(t: Option<&Token>) -> String {
    match t {
        None => "the end".into(),
        Some(Token::Open) => "`(`".into(),
        Some(Token::Close) => "`)`".into(),
        Some(Token::OpenBracket) => "`[`".into(),
        Some(Token::CloseBracket) => "`]`".into(),
        Some(Token::Str(s)) => format!("{s:?}"),
        Some(Token::Word(w)) => format!("`{w}`"),
    }
}

/// Parse a filter over the attributes of `scope`.
pub fn parse(text: &str, scope: &'static [Attr]) -> Result<Filter, String> {
    let tokens = tokens(text)?;
    let mut p = Parser {
        tokens: &tokens,
        pos: 0,
        text,
    };
    let f = p.or(scope)?;
    if let Some(extra) = p.peek() {
        return Err(format!("unexpected {} in `{text}`", describe(Some(extra))));
    }
    Ok(f)
}

/// The values at a path, arrays flattened; a complex value stands for its `value`.
fn values_at<'v>(resource: &'v Value, attrs: &[&'static Attr]) -> Vec<&'v Value> {
    let mut current = vec![resource];
    for a in attrs {
        let mut next = Vec::new();
        for v in current {
            match v.get(a.name) {
                Some(Value::Array(items)) => next.extend(items.iter()),
                Some(Value::Null) | None => {}
                Some(other) => next.push(other),
            }
        }
        current = next;
    }
    current
        .into_iter()
        .filter_map(|v| match v {
            Value::Object(m) => m.get("value"),
            other => Some(other),
        })
        .collect()
}

fn case_exact(attrs: &[&'static Attr]) -> bool {
    let a = attrs[attrs.len() - 1];
    match find(a.sub, "value") {
        Some(v) if a.ty == Type::Complex => v.case_exact,
        _ => a.case_exact,
    }
}

fn compare(have: &Value, op: Op, want: &Value, exact: bool) -> bool {
    match (have, want) {
        (Value::String(h), Value::String(w)) => {
            let (h, w) = if exact {
                (h.clone(), w.clone())
            } else {
                (h.to_lowercase(), w.to_lowercase())
            };
            match op {
                Op::Eq => h == w,
                Op::Ne => h != w,
                Op::Co => h.contains(&w),
                Op::Sw => h.starts_with(&w),
                Op::Ew => h.ends_with(&w),
                Op::Gt => h > w,
                Op::Ge => h >= w,
                Op::Lt => h < w,
                Op::Le => h <= w,
            }
        }
        (h, w) => match op {
            Op::Eq => h == w,
            Op::Ne => h != w,
            _ => false,
        },
    }
}

impl Filter {
    /// Whether `resource` (a User, or an element of a multi-valued attribute) matches.
    pub fn matches(&self, resource: &Value) -> bool {
        match self {
            Filter::Present(attrs) => values_at(resource, attrs)
                .iter()
                .any(|v| !matches!(v, Value::String(s) if s.is_empty())),
            Filter::Compare(attrs, op, want) => {
                let values = values_at(resource, attrs);
                let exact = case_exact(attrs);
                match (op, want) {
                    (Op::Eq, Value::Null) => values.is_empty(),
                    (Op::Ne, Value::Null) => !values.is_empty(),
                    (Op::Ne, _) => !values.iter().any(|v| compare(v, Op::Eq, want, exact)),
                    _ => values.iter().any(|v| compare(v, *op, want, exact)),
                }
            }
            Filter::Value(a, inner) => resource
                .get(a.name)
                .and_then(Value::as_array)
                .is_some_and(|items| items.iter().any(|i| inner.matches(i))),
            Filter::And(l, r) => l.matches(resource) && r.matches(resource),
            Filter::Or(l, r) => l.matches(resource) || r.matches(resource),
            Filter::Not(inner) => !inner.matches(resource),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::schema::USER;
    use super::*;
    use serde_json::json;

    fn user() -> Value {
        json!({
            "userName": "Alice@Example.com",
            "id": "abc",
            "active": true,
            "title": "",
            "name": { "givenName": "Alice", "familyName": "Liddell" },
            "emails": [
                { "value": "alice@work.example", "type": "work" },
                { "value": "alice@home.example", "type": "home" }
            ],
            "meta": { "lastModified": "2024-05-01T12:00:00Z" }
        })
    }

    fn m(f: &str) -> bool {
        parse(f, USER)
            .unwrap_or_else(|e| panic!("{f}: {e}"))
            .matches(&user())
    }

    #[test]
    fn operators_and_logic_follow_rfc_7644() {
        assert!(m(r#"userName eq "alice@example.com""#));
        assert!(m(r#"USERNAME Eq "ALICE@EXAMPLE.COM""#));
        assert!(m(&format!(r#"{USER_SCHEMA}:userName sw "alice""#)));
        assert!(!m(r#"id eq "ABC""#), "id is caseExact");
        assert!(m(r#"userName ne "bob@example.com""#));
        assert!(m(r#"name.givenName co "lic""#));
        assert!(m(r#"userName ew ".com""#));
        assert!(m("active eq true and name.familyName pr"));
        assert!(!m("title pr"), "an empty string is not present");
        assert!(!m("nickName pr"));
        assert!(m(
            r#"nickName pr or (active eq true and not (userName eq "x"))"#
        ));
        assert!(m(r#"emails eq "alice@home.example""#));
        assert!(m(r#"emails[type eq "work" and value co "@work"]"#));
        assert!(!m(r#"emails[type eq "other"]"#));
        assert!(m(r#"meta.lastModified gt "2024-01-01T00:00:00Z""#));
        assert!(!m("active eq false"));
    }

    #[test]
    fn bad_filters_name_what_is_wrong() {
        let e = |f: &str| parse(f, USER).unwrap_err();
        assert!(e(r#"shoeSize eq "9""#).contains("shoeSize"));
        assert!(e(r#"name.shoe eq "9""#).contains("shoe"));
        assert!(e("userName eq alice").contains("quote"));
        assert!(e(r#"userName is "x""#).contains("`is`"));
        assert!(e(r#"active eq "true""#).contains("boolean"));
        assert!(e(r#"(userName eq "x""#).contains("`)`"));
        assert!(e(r#"userName eq "x" extra"#).contains("extra"));
        assert!(e("userName").contains("operator"));
        assert!(e(r#"urn:other:Thing:x eq "y""#).contains("schema"));
    }
}
