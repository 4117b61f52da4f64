//! HTTP route templates as the Functions host matches them (ASP.NET Core template routing).
//!
//! Guarantees, mirroring the real host (`WebScriptHostHttpRoutesManager` builds one template
//! route per HTTP function, `{routePrefix}/{route}`, with an `HttpMethodRouteConstraint`):
//! - the request path is split as ASP.NET Core's `PathTokenizer` splits it: one trailing slash
//!   is ignored, and an empty segment (`/api//x`, `/api/x//`) matches no template, up to a
//!   catch-all;
//! - literal segments match case-insensitively as .NET's `OrdinalIgnoreCase` compares them
//!   (the Kelvin sign is not a `k`, the dotless `ı` not an `i`), against the percent-decoded
//!   segment; the request is then forwarded with its path as it came;
//! - `{name}` matches one non-empty segment, percent-decoded (but `%2F`, which Kestrel keeps);
//! - `{name?}` and `{name=default}` may be absent at the end of the path;
//! - `{*name}` (catch-all) takes the rest of the path as it came (decoded), slashes included,
//!   a trailing one too, possibly empty;
//! - constraints (`{id:int}`, `{n:min(1)}`, `{s:alpha}`, ...) are checked for the common kinds
//!   (int, long, bool, guid, alpha, double, float, decimal, min, max, range, minlength,
//!   maxlength, length); any other constraint (regex, datetime, custom) is accepted unchecked.
//!
//! Routes are tried in the host's order of precedence ([`RouteTemplate::precedence`], as
//! `WebJobsRouteBuilder` sorts them), not in the order the functions were found: a literal
//! segment before a parameter, of two parameters the one with more constraints, literals in
//! case-insensitive ordinal order, and a longer template before its prefix.
//!
//! A route whose segment mixes literal text and parameters (`{a}.{b}`) is refused at load
//! time: the simulator would not match it the way the host does, so it says so.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use percent_encoding::percent_decode_str;

/// One parsed route template (route prefix included).
#[derive(Debug, Clone)]
pub struct RouteTemplate {
    text: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    Param(Param),
}

#[derive(Debug, Clone)]
struct Param {
    name: String,
    catch_all: bool,
    optional: bool,
    default: Option<String>,
    constraints: Vec<Constraint>,
}

#[derive(Debug, Clone)]
struct Constraint {
    kind: String,
    args: Vec<String>,
}

impl RouteTemplate {
    /// Parses `prefix` (e.g. `api`, possibly empty or with slashes) and `route` (a function's
    /// `route`, e.g. `OpenAccount/{accountnumber}`) into one template.
    pub fn parse(prefix: &str, route: &str) -> anyhow::Result<Self> {
        let mut segments = Vec::new();
        for literal in split_path(prefix) {
            if literal.contains('{') || literal.contains('}') {
                bail!("route prefix {prefix:?} must not hold parameters");
            }
            segments.push(Segment::Literal(literal.to_string()));
        }
        let route = route.trim_start_matches('~');
        let parts: Vec<&str> = split_path(route).collect();
        for (index, part) in parts.iter().enumerate() {
            let segment = parse_segment(part)
                .with_context(|| format!("route template {route:?}, segment {part:?}"))?;
            if let Segment::Param(param) = &segment {
                if param.catch_all && index + 1 != parts.len() {
                    bail!(
                        "route template {route:?}: a catch-all parameter must be the last segment"
                    );
                }
            }
            segments.push(segment);
        }
        let text = if prefix.trim_matches('/').is_empty() {
            route.trim_matches('/').to_string()
        } else if route.trim_matches('/').is_empty() {
            prefix.trim_matches('/').to_string()
        } else {
            format!("{}/{}", prefix.trim_matches('/'), route.trim_matches('/'))
        };
        Ok(Self { text, segments })
    }

    /// How this template orders against `other` when the host tries routes: `Less` = tried
    /// first. Segment by segment: a literal before a parameter; of two parameters, the one with
    /// more inline constraints; of two literals, case-insensitive ordinal order; when one
    /// template is a prefix of the other, the longer one first.
    pub fn precedence(&self, other: &Self) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        for (index, mine) in self.segments.iter().enumerate() {
            let Some(theirs) = other.segments.get(index) else {
                return Ordering::Less;
            };
            let order = match (mine, theirs) {
                (Segment::Literal(_), Segment::Param(_)) => Ordering::Less,
                (Segment::Param(_), Segment::Literal(_)) => Ordering::Greater,
                (Segment::Param(a), Segment::Param(b)) => {
                    b.constraints.len().cmp(&a.constraints.len())
                }
                (Segment::Literal(a), Segment::Literal(b)) => a
                    .chars()
                    .map(ordinal_upper)
                    .cmp(b.chars().map(ordinal_upper)),
            };
            if order != Ordering::Equal {
                return order;
            }
        }
        if other.segments.len() > self.segments.len() {
            Ordering::Greater
        } else {
            Ordering::Equal
        }
    }

    /// The template as written, prefix included, without a leading slash.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Matches a raw (percent-encoded) request path. Returns the route values (parameters,
    /// with defaults filled in) when it matches.
    pub fn matches(&self, raw_path: &str) -> Option<BTreeMap<String, String>> {
        let request = request_segments(raw_path);
        let mut values = BTreeMap::new();
        for (index, segment) in self.segments.iter().enumerate() {
            let raw = request.get(index);
            // The host refuses an empty segment anywhere up to a catch-all.
            if raw.is_some_and(|(_, raw)| raw.is_empty()) {
                return None;
            }
            match segment {
                Segment::Literal(literal) => {
                    let (_, raw) = raw?;
                    if !ordinal_eq_ignore_case(&decode(raw), literal) {
                        return None;
                    }
                }
                Segment::Param(param) if param.catch_all => {
                    // The rest of the path as it came (decoded), a trailing slash included.
                    let rest = raw
                        .and_then(|(start, _)| raw_path.get(*start..))
                        .map(decode)
                        .unwrap_or_default();
                    if rest.is_empty() {
                        if let Some(default) = &param.default {
                            values.insert(param.name.clone(), default.clone());
                        }
                    } else {
                        if !param.constraints.iter().all(|c| c.accepts(&rest)) {
                            return None;
                        }
                        values.insert(param.name.clone(), rest);
                    }
                    return Some(values);
                }
                Segment::Param(param) => match raw {
                    Some((_, raw)) => {
                        let value = decode(raw);
                        if !param.constraints.iter().all(|c| c.accepts(&value)) {
                            return None;
                        }
                        values.insert(param.name.clone(), value);
                    }
                    None => {
                        if let Some(default) = &param.default {
                            values.insert(param.name.clone(), default.clone());
                        } else if !param.optional {
                            return None;
                        }
                    }
                },
            }
        }
        if request.len() > self.segments.len() {
            return None;
        }
        Some(values)
    }
}

/// Segments of a route template or prefix, without empty ones at the ends.
fn split_path(path: &str) -> impl Iterator<Item = &str> {
    let trimmed = path.trim_matches('/');
    let mut parts = trimmed.split('/');
    if trimmed.is_empty() {
        // `"".split('/')` yields one empty part; a root path has no segments.
        parts.next();
    }
    parts
}

/// The segments of a request path as ASP.NET Core's router (`PathTokenizer`) sees them, each
/// with its offset in the path: after the leading `/`, exactly one trailing `/` is ignored and
/// the rest is split on `/`, empty segments kept (`/` has none, `/api/` one, `/api//` two, the
/// second empty; an empty segment matches no template).
fn request_segments(path: &str) -> Vec<(usize, &str)> {
    let Some(body) = path.strip_prefix('/').filter(|body| !body.is_empty()) else {
        return Vec::new();
    };
    let body = body.strip_suffix('/').unwrap_or(body);
    let mut segments = Vec::new();
    let mut start = 1;
    for part in body.split('/') {
        segments.push((start, part));
        start += part.len() + 1;
    }
    segments
}

/// Percent-decodes a piece of path as Kestrel does before routing: everything but `%2F`, which
/// stays encoded so that it can never split a segment.
fn decode(raw: &str) -> String {
    let mut decoded = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = find_encoded_slash(rest) {
        decoded.push_str(&percent_decode_str(&rest[..at]).decode_utf8_lossy());
        decoded.push_str(&rest[at..at + 3]);
        rest = &rest[at + 3..];
    }
    decoded.push_str(&percent_decode_str(rest).decode_utf8_lossy());
    decoded
}

fn find_encoded_slash(text: &str) -> Option<usize> {
    text.as_bytes()
        .windows(3)
        .position(|w| w[0] == b'%' && w[1] == b'2' && (w[2] == b'F' || w[2] == b'f'))
}

/// One character as .NET's `OrdinalIgnoreCase` compares it (which ASP.NET routing uses for
/// literal segments): its simple, one-to-one uppercase mapping, except that the dotless `ı` and
/// the long `ſ` keep theirs, so they never equal `I` and `S`; a character whose uppercase is
/// several characters keeps its own. Unlike a Unicode lowercase comparison, the Kelvin sign
/// `K` is not a `k`.
fn ordinal_upper(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_uppercase();
    }
    if c == '\u{131}' || c == '\u{17F}' {
        return c;
    }
    let mut upper = c.to_uppercase();
    match (upper.next(), upper.next()) {
        (Some(single), None) => single,
        _ => c,
    }
}

fn ordinal_eq_ignore_case(a: &str, b: &str) -> bool {
    a.chars().count() == b.chars().count()
        && a.chars()
            .zip(b.chars())
            .all(|(x, y)| x == y || ordinal_upper(x) == ordinal_upper(y))
}

fn parse_segment(part: &str) -> anyhow::Result<Segment> {
    let is_param = part.starts_with('{') && part.ends_with('}') && !part.starts_with("{{");
    if !is_param {
        if part.contains('{') || part.contains('}') {
            bail!("segments mixing literal text and parameters are not supported by the simulator");
        }
        return Ok(Segment::Literal(part.to_string()));
    }
    let inner = &part[1..part.len() - 1];
    if inner.contains('{') {
        bail!("segments with several parameters are not supported by the simulator");
    }
    let (catch_all, inner) = match inner.strip_prefix("**") {
        Some(rest) => (true, rest),
        None => match inner.strip_prefix('*') {
            Some(rest) => (true, rest),
            None => (false, inner),
        },
    };
    let name_end = inner.find([':', '=', '?']).unwrap_or(inner.len());
    let name = inner[..name_end].trim().to_string();
    if name.is_empty() {
        bail!("parameter without a name");
    }
    let mut rest = &inner[name_end..];
    let mut constraints = Vec::new();
    while let Some(after_colon) = rest.strip_prefix(':') {
        let kind_end = after_colon
            .find(['(', ':', '=', '?'])
            .unwrap_or(after_colon.len());
        let kind = after_colon[..kind_end].to_string();
        let mut after = &after_colon[kind_end..];
        let mut args = Vec::new();
        if after.starts_with('(') {
            let close = matching_paren(after).context("unclosed '(' in a constraint")?;
            args = after[1..close]
                .split(',')
                .map(|a| a.trim().to_string())
                .collect();
            after = &after[close + 1..];
        }
        constraints.push(Constraint { kind, args });
        rest = after;
    }
    let mut default = None;
    let mut optional = false;
    if let Some(value) = rest.strip_prefix('=') {
        default = Some(value.to_string());
    } else if rest == "?" {
        optional = true;
    } else if !rest.is_empty() {
        bail!("unexpected {rest:?} after the parameter's name and constraints");
    }
    Ok(Segment::Param(Param {
        name,
        catch_all,
        optional,
        default,
        constraints,
    }))
}

/// The index of the `)` closing the `(` at the start of `text`.
fn matching_paren(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (index, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(index);
                }
            }
            _ => {}
        }
    }
    None
}

impl Constraint {
    fn arg<T: std::str::FromStr>(&self, index: usize) -> Option<T> {
        self.args.get(index).and_then(|a| a.parse().ok())
    }

    fn accepts(&self, value: &str) -> bool {
        let chars = value.chars().count();
        match self.kind.to_ascii_lowercase().as_str() {
            "int" => value.parse::<i32>().is_ok(),
            "long" => value.parse::<i64>().is_ok(),
            "bool" => value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("false"),
            "guid" => uuid::Uuid::parse_str(value.trim_matches(['{', '}', '(', ')'])).is_ok(),
            "alpha" => !value.is_empty() && value.chars().all(|c| c.is_ascii_alphabetic()),
            "double" | "float" | "decimal" => value.parse::<f64>().is_ok(),
            "min" => {
                matches!((value.parse::<i64>(), self.arg::<i64>(0)), (Ok(v), Some(m)) if v >= m)
            }
            "max" => {
                matches!((value.parse::<i64>(), self.arg::<i64>(0)), (Ok(v), Some(m)) if v <= m)
            }
            "range" => matches!(
                (value.parse::<i64>(), self.arg::<i64>(0), self.arg::<i64>(1)),
                (Ok(v), Some(lo), Some(hi)) if v >= lo && v <= hi
            ),
            "minlength" => self.arg::<usize>(0).is_some_and(|m| chars >= m),
            "maxlength" => self.arg::<usize>(0).is_some_and(|m| chars <= m),
            "length" => match (self.arg::<usize>(0), self.arg::<usize>(1)) {
                (Some(lo), Some(hi)) => chars >= lo && chars <= hi,
                (Some(exact), None) => chars == exact,
                _ => true,
            },
            // regex, datetime, required, custom constraints: tolerated, not checked.
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn routes_are_ordered_as_the_host_orders_them() {
        let parse = |route: &str| RouteTemplate::parse("api", route).unwrap();
        let mut routes = [
            parse("{*path}"),
            parse("OpenAccount/{id}"),
            parse("streams/{domain}/{entity}"),
            parse("streams/{domain}/{entity}/{instance}"),
            parse("Accounts"),
            parse("{id:int}"),
            parse("{name}"),
            parse("openapi.json"),
        ];
        routes.sort_by(|a, b| a.precedence(b));
        let texts: Vec<&str> = routes.iter().map(|r| r.text()).collect();
        assert_eq!(
            texts,
            [
                "api/Accounts",
                "api/OpenAccount/{id}",
                "api/openapi.json",
                "api/streams/{domain}/{entity}/{instance}",
                "api/streams/{domain}/{entity}",
                "api/{id:int}",
                "api/{*path}",
                "api/{name}",
            ]
        );
    }

    use super::*;

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn literal_routes_match_case_insensitively_with_the_prefix() {
        let t = RouteTemplate::parse("api", "OpenAccount").unwrap();
        assert_eq!(t.matches("/api/OpenAccount"), Some(values(&[])));
        assert_eq!(t.matches("/API/openaccount/"), Some(values(&[])));
        assert_eq!(t.matches("/api/OpenAccount/x"), None);
        assert_eq!(t.matches("/OpenAccount"), None);
        assert_eq!(t.text(), "api/OpenAccount");
    }

    #[test]
    fn parameters_are_decoded_and_required_unless_optional() {
        let t = RouteTemplate::parse("api", "acct/{number}/{name?}").unwrap();
        assert_eq!(
            t.matches("/api/acct/4%202/bob"),
            Some(values(&[("number", "4 2"), ("name", "bob")]))
        );
        assert_eq!(t.matches("/api/acct/42"), Some(values(&[("number", "42")])));
        assert_eq!(t.matches("/api/acct"), None);
    }

    #[test]
    fn constraints_filter_values() {
        let t = RouteTemplate::parse("api", "items/{id:int:min(1)}").unwrap();
        assert!(t.matches("/api/items/5").is_some());
        assert!(t.matches("/api/items/0").is_none());
        assert!(t.matches("/api/items/abc").is_none());
        let t = RouteTemplate::parse("api", "x/{s:regex(^a(b|c)$)}").unwrap();
        assert!(t.matches("/api/x/anything").is_some());
    }

    #[test]
    fn defaults_and_catch_all() {
        let t = RouteTemplate::parse("", "files/{kind=raw}").unwrap();
        assert_eq!(t.matches("/files"), Some(values(&[("kind", "raw")])));
        let t = RouteTemplate::parse("api", "blob/{*path}").unwrap();
        assert_eq!(
            t.matches("/api/blob/a/b/c"),
            Some(values(&[("path", "a/b/c")]))
        );
        assert_eq!(t.matches("/api/blob"), Some(values(&[])));
    }

    #[test]
    fn empty_prefix_and_route() {
        let t = RouteTemplate::parse("api", "").unwrap();
        assert!(t.matches("/api").is_some());
        assert!(t.matches("/api/x").is_none());
        let t = RouteTemplate::parse("", "").unwrap();
        assert!(t.matches("/").is_some());
    }

    #[test]
    fn literals_compare_as_dotnet_ordinal_ignore_case() {
        let t = RouteTemplate::parse("api", "Deposit/{id}").unwrap();
        assert!(t.matches("/API/deposit/A").is_some());
        assert!(t.matches("/api/DEPOSIT/A").is_some());
        assert!(t.matches("/api/%44eposit/A").is_some(), "compared decoded");
        let t = RouteTemplate::parse("api", "Kelvin").unwrap();
        // The Kelvin sign lowercases to `k`, but .NET's ordinal comparison uppercases, and it
        // is its own uppercase.
        assert!(t.matches("/api/%E2%84%AAelvin").is_none());
        assert!(t.matches("/api/kELVIN").is_some());
        let t = RouteTemplate::parse("api", "Withdraw").unwrap();
        assert!(t.matches("/api/w%C4%B1thdraw").is_none(), "dotless i");
        let t = RouteTemplate::parse("api", "Straße").unwrap();
        assert!(t.matches("/api/STRA%C3%9FE").is_some());
        assert!(t.matches("/api/STRASSE").is_none());
    }

    #[test]
    fn request_paths_split_as_asp_net_splits_them() {
        let t = RouteTemplate::parse("api", "Accounts").unwrap();
        assert!(t.matches("/api/Accounts/").is_some(), "one trailing slash");
        for path in ["/api/Accounts//", "//api/Accounts", "/api//Accounts"] {
            assert!(t.matches(path).is_none(), "{path}");
        }
        let t = RouteTemplate::parse("api", "acct/{id}").unwrap();
        assert!(t.matches("/api/acct//").is_none());
        assert_eq!(
            t.matches("/api/acct/a%2Fb%20c"),
            Some(values(&[("id", "a%2Fb c")])),
            "%2F stays encoded in a value, as Kestrel leaves it"
        );
        let t = RouteTemplate::parse("api", "{*path}").unwrap();
        assert_eq!(t.matches("/api/"), Some(values(&[])), "an empty api/");
        assert_eq!(t.matches("/api"), Some(values(&[])));
        assert_eq!(
            t.matches("/api/a//B/"),
            Some(values(&[("path", "a//B/")])),
            "the rest as it came, after the catch-all starts"
        );
        assert!(
            t.matches("/api//a").is_none(),
            "empty where the catch-all starts"
        );
    }

    #[test]
    fn unsupported_templates_are_refused() {
        assert!(RouteTemplate::parse("api", "a/{x}.{y}").is_err());
        assert!(RouteTemplate::parse("api", "a/{*rest}/b").is_err());
        assert!(RouteTemplate::parse("api", "a/{}").is_err());
    }
}
