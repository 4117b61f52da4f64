//! Routes as the Azure Functions host routes them: every function the handler serves declares
//! its route, and a request is answered by the function the host would have chosen, whatever
//! spelling of the path the host forwarded.
//!
//! The host matches a request to an HTTP function's template (`{routePrefix}/{route}`) with
//! ASP.NET Core's template routing, then (with `enableForwardingHttpRequest`) forwards the
//! request with its **original** path. Literal segments match ignoring case (.NET's
//! `OrdinalIgnoreCase`), so `POST /api/deposit/ACC-1` reaches the handler for the template
//! `Deposit/{accountnumber}`. warp matches literals exactly, so [`RouteTable::resolve`] runs
//! first and rewrites the path's literal segments to the template's spelling; parameter
//! segments are left as they are (they are case-sensitive keys). The matching follows the
//! host's: one trailing slash is ignored, an empty segment matches nothing, a literal is
//! compared with its percent-decoded segment, and templates are tried in the host's order of
//! precedence (literal before parameter, longer before shorter).
//!
//! The table also decides what no filter should: a path no template matches is 404
//! `no-such-route`, and a path that a template matches with another method is 405
//! `method-not-allowed` with an `Allow` header. A catch-all function (the app's `NotFound`,
//! `{*path}`, which makes the host forward unknown paths so they get a problem response) is
//! declared as a [`RouteKind::Fallback`] and never counts as a match.
//!
//! Functions with other triggers (Event Grid, timer) are invoked by the host with
//! `POST /{FunctionName}`, the name spelled as its folder is; they are declared as
//! [`RouteKind::Invocation`] and matched the same way (a name differing only in case is the same
//! function to the host).
//!
//! The declarations are checked against the `function.json` files by a test of the handler
//! binary, so the two cannot drift apart.

use std::cmp::Ordering;

use percent_encoding::percent_decode_str;
use warp::filters::BoxedFilter;
use warp::http::Method;
use warp::reply::Response;
use warp::Filter;

/// The route prefix of HTTP functions (`extensions.http.routePrefix` in host.json).
pub const ROUTE_PREFIX: &str = "api";

/// What kind of function a route belongs to, which says where its path lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// An HTTP-triggered function: `/{ROUTE_PREFIX}/{template}`.
    Http,
    /// A function with another trigger: the host posts its invocation payload to
    /// `/{FunctionName}`.
    Invocation,
    /// A catch-all HTTP function that only exists so that unknown paths reach the handler and
    /// get a problem response: declared, never a match.
    Fallback,
    /// The handler's readiness answer at `/` (added by [`super::serve`]).
    Readiness,
}

/// One function's route.
#[derive(Debug, Clone)]
pub struct Route {
    function: String,
    kind: RouteKind,
    methods: Vec<Method>,
    template: Template,
}

impl Route {
    /// The function's name (its folder under `functions/`).
    pub fn function(&self) -> &str {
        &self.function
    }

    pub fn kind(&self) -> RouteKind {
        self.kind
    }

    /// The methods it accepts.
    pub fn methods(&self) -> &[Method] {
        &self.methods
    }

    /// The template as declared: the `route` of an HTTP function's function.json (without the
    /// prefix), or the function's name for an invocation.
    pub fn template(&self) -> &str {
        &self.template.declared
    }
}

/// A parsed template.
#[derive(Debug, Clone)]
struct Template {
    declared: String,
    segments: Vec<Segment>,
    /// How many segments a path it matches has, at least and at most: every segment before a
    /// catch-all and then any number, or every segment but an optional last parameter.
    min_segments: usize,
    max_segments: usize,
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    /// `{name}` (constraints and defaults are the host's business: it only forwards what
    /// satisfies them); `{name?}` may be absent when it ends the path.
    Parameter {
        optional: bool,
    },
    /// `{*name}`: the rest of the path, possibly empty.
    CatchAll,
}

impl Template {
    /// `prefix` (may be empty) and `declared`, split on `/`; a segment wholly in braces is a
    /// parameter, a catch-all when its name starts with `*`; anything else is literal text.
    fn parse(prefix: &str, declared: &str) -> Self {
        let segments = prefix
            .split('/')
            .chain(declared.trim_start_matches('~').split('/'))
            .filter(|part| !part.is_empty())
            .map(
                |part| match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                    Some(inner) if inner.starts_with('*') => Segment::CatchAll,
                    Some(inner) => Segment::Parameter {
                        optional: inner.ends_with('?'),
                    },
                    None => Segment::Literal(part.to_owned()),
                },
            )
            .collect::<Vec<_>>();
        let (min_segments, max_segments) =
            match segments.iter().position(|s| matches!(s, Segment::CatchAll)) {
                // Nothing after a catch-all is ever looked at.
                Some(catch_all) => (catch_all, usize::MAX),
                None => {
                    let all = segments.len();
                    // An optional last parameter may be left out, but not the whole path.
                    let optional_last =
                        matches!(segments.last(), Some(Segment::Parameter { optional: true }));
                    if optional_last && all >= 2 {
                        (all.saturating_sub(1), all)
                    } else {
                        (all, all)
                    }
                }
            };
        Self {
            declared: declared.to_owned(),
            segments,
            min_segments,
            max_segments,
        }
    }

    /// The host's order of precedence (`Less` = tried first), segment by segment: a literal
    /// before a parameter, literals in case-insensitive ordinal order, a longer template before
    /// its prefix.
    fn precedence(&self, other: &Self) -> Ordering {
        for (index, mine) in self.segments.iter().enumerate() {
            let Some(theirs) = other.segments.get(index) else {
                return Ordering::Less;
            };
            let order = match (mine, theirs) {
                (Segment::Literal(a), Segment::Literal(b)) => a
                    .chars()
                    .map(ordinal_upper)
                    .cmp(b.chars().map(ordinal_upper)),
                (Segment::Literal(_), _) => Ordering::Less,
                (_, Segment::Literal(_)) => Ordering::Greater,
                _ => Ordering::Equal,
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

    /// Whether the template matches `request`, decided without allocating: on the number of
    /// segments first, then segment by segment up to the first that differs. An empty segment
    /// matches nothing (a catch-all's first included), a literal is compared with its
    /// percent-decoded segment ([`literal_matches`]), a parameter takes any other.
    fn matches(&self, request: &RequestPath<'_>) -> bool {
        if request.count < self.min_segments || request.count > self.max_segments {
            return false;
        }
        // The count is within bounds, so the segments the zip leaves out on either side are the
        // ones that may be missing (an optional last parameter, a catch-all with nothing to
        // take) or never looked at (after a catch-all).
        for (segment, (_, raw)) in self.segments.iter().zip(request.segments()) {
            if raw.is_empty() {
                return false;
            }
            match segment {
                Segment::CatchAll => return true,
                Segment::Literal(literal) => {
                    if !literal_matches(raw, literal) {
                        return false;
                    }
                }
                Segment::Parameter { .. } => {}
            }
        }
        true
    }

    /// The path of `request`, which this template [`matches`](Self::matches), with the
    /// template's spelling of its literal segments: parameters as they came, a catch-all the
    /// rest of the path as it came (trailing slash included).
    fn spell(&self, request: &RequestPath<'_>) -> String {
        let mut spelled = String::with_capacity(request.path.len());
        let mut segments = request.segments();
        for segment in &self.segments {
            let Some((start, raw)) = segments.next() else {
                // A catch-all with nothing to take, or an optional last parameter left out.
                return spelled;
            };
            match segment {
                Segment::CatchAll => {
                    if let Some(rest) = request.path.get(start..) {
                        spelled.push('/');
                        spelled.push_str(rest);
                    }
                    return spelled;
                }
                Segment::Literal(literal) => {
                    spelled.push('/');
                    spelled.push_str(literal);
                }
                Segment::Parameter { .. } => {
                    spelled.push('/');
                    spelled.push_str(raw);
                }
            }
        }
        if spelled.is_empty() {
            spelled.push('/');
        }
        spelled
    }
}

/// A request path as ASP.NET Core's router sees it: after the leading `/`, one trailing `/` is
/// ignored and the rest split on `/` (`/` has no segment, `/api/` one, `/api//` two, the second
/// empty). The segments are counted once and split lazily, as each template needs them: most
/// templates are refused on the count alone, the others mostly on their first segments.
#[derive(Debug, Clone, Copy)]
struct RequestPath<'a> {
    path: &'a str,
    /// Between the leading `/` and an ignored trailing one; `None` when there are no segments.
    body: Option<&'a str>,
    count: usize,
}

impl<'a> RequestPath<'a> {
    fn new(path: &'a str) -> Self {
        let body = path
            .strip_prefix('/')
            .filter(|body| !body.is_empty())
            .map(|body| body.strip_suffix('/').unwrap_or(body));
        let count = body.map_or(0, |body| {
            body.bytes()
                .filter(|&byte| byte == b'/')
                .count()
                .saturating_add(1)
        });
        Self { path, body, count }
    }

    /// The segments in order, each with its offset in the path.
    fn segments(&self) -> RequestSegments<'a> {
        RequestSegments {
            rest: self.body,
            offset: 1,
        }
    }
}

/// The segments of a [`RequestPath`], each with its offset in the path.
#[derive(Debug, Clone)]
struct RequestSegments<'a> {
    /// What is left to split; `None` once the last segment was taken.
    rest: Option<&'a str>,
    /// The offset of `rest` in the path.
    offset: usize,
}

impl<'a> Iterator for RequestSegments<'a> {
    type Item = (usize, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest?;
        // Segments are short: a plain scan is cheaper than `split_once`'s `memchr`.
        let (segment, tail) = match rest.bytes().position(|byte| byte == b'/') {
            Some(slash) => (
                rest.get(..slash).unwrap_or(rest),
                rest.get(slash.saturating_add(1)..),
            ),
            None => (rest, None),
        };
        let offset = self.offset;
        self.rest = tail;
        self.offset = offset.saturating_add(segment.len()).saturating_add(1);
        Some((offset, segment))
    }
}

/// The segments of `path` (see [`RequestPath`]), collected.
#[cfg(test)]
fn tokenize(path: &str) -> Vec<(usize, &str)> {
    RequestPath::new(path).segments().collect()
}

/// Whether a request segment (raw, percent-encoded) is `literal` to the host: its
/// percent-decoded text, when that is UTF-8, equals `literal` under [`ordinal_eq_ignore_case`].
/// A segment without `%` is its own decoding.
fn literal_matches(raw: &str, literal: &str) -> bool {
    if !raw.contains('%') {
        return ordinal_eq_ignore_case(raw, literal);
    }
    percent_decode_str(raw)
        .decode_utf8()
        .is_ok_and(|decoded| ordinal_eq_ignore_case(&decoded, literal))
}

/// One character as .NET's `OrdinalIgnoreCase` compares it: its simple (one-to-one) uppercase
/// mapping, except that the dotless `ı` and the long `ſ` keep theirs (so they never equal
/// `I` and `S`). A character whose uppercase is several characters keeps its own. For the
/// ASCII literals of route templates this is exactly the host's comparison: only the ASCII
/// letters themselves, in either case, equal them.
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

/// `a` and `b` are equal under [`ordinal_upper`], character by character. The host simulator
/// (`testbed/src/hostsim/route.rs`) writes this comparison again on purpose: it stands for the
/// real host, independently of this crate, so the tests that compare the two can catch a
/// divergence instead of comparing this code with itself.
///
/// On ASCII, [`ordinal_upper`] is `to_ascii_uppercase`, and it maps no other character into
/// ASCII (a test checks every `char`). So when either side is ASCII (a template's literal
/// usually is), the two are equal exactly when their bytes are equal but for ASCII case:
/// [`str::eq_ignore_ascii_case`], which compares the lengths first.
fn ordinal_eq_ignore_case(a: &str, b: &str) -> bool {
    if b.is_ascii() || a.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    let (mut a, mut b) = (a.chars(), b.chars());
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(x), Some(y)) if x == y || ordinal_upper(x) == ordinal_upper(y) => {}
            _ => return false,
        }
    }
}

/// What the table says about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Serve it, with this path: the request's, its literal segments spelled as the chosen
    /// route's template spells them.
    Found { function: String, path: String },
    /// The path is a route's, but none accepts the method: 405 with these in `Allow`.
    WrongMethod { allow: Vec<Method> },
    /// No route has this path: 404.
    NotFound,
}

/// Every route the handler serves, in the host's order of precedence.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// An HTTP function: `methods` on `/{ROUTE_PREFIX}/{template}`, `template` written as the
    /// `route` of its function.json (`Deposit/{accountnumber}`).
    pub fn http(self, function: &str, methods: &[Method], template: &str) -> Self {
        self.with(function, RouteKind::Http, methods, ROUTE_PREFIX, template)
    }

    /// A function with another trigger: `POST /{function}`.
    pub fn invocation(self, function: &str) -> Self {
        self.with(
            function,
            RouteKind::Invocation,
            &[Method::POST],
            "",
            function,
        )
    }

    /// A catch-all HTTP function (`{*path}`) whose only purpose is to have the host forward
    /// unknown paths: declared for the record, never a match.
    pub fn fallback(self, function: &str, methods: &[Method], template: &str) -> Self {
        self.with(
            function,
            RouteKind::Fallback,
            methods,
            ROUTE_PREFIX,
            template,
        )
    }

    /// The readiness answer, `GET /`.
    pub(crate) fn readiness(self) -> Self {
        self.with("", RouteKind::Readiness, &[Method::GET], "", "")
    }

    /// Both tables' routes.
    pub fn merge(mut self, other: RouteTable) -> Self {
        self.routes.extend(other.routes);
        self.sort();
        self
    }

    /// The routes, in the order they are tried.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    fn with(
        mut self,
        function: &str,
        kind: RouteKind,
        methods: &[Method],
        prefix: &str,
        template: &str,
    ) -> Self {
        self.routes.push(Route {
            function: function.to_owned(),
            kind,
            methods: methods.to_vec(),
            template: Template::parse(prefix, template),
        });
        self.sort();
        self
    }

    fn sort(&mut self) {
        self.routes
            .sort_by(|a, b| a.template.precedence(&b.template));
    }

    /// Which route answers `method` on `path` (the request's raw, percent-encoded path): the
    /// first in order of precedence whose template matches the path and which accepts the
    /// method, as the host chooses. Nothing is allocated until the answer is known: templates
    /// are matched in place, and only the chosen one spells the path.
    pub fn resolve(&self, method: &Method, path: &str) -> Resolution {
        let request = RequestPath::new(path);
        let mut allow: Vec<Method> = Vec::new();
        for route in &self.routes {
            if route.kind == RouteKind::Fallback || !route.template.matches(&request) {
                continue;
            }
            if route.methods.contains(method) {
                return Resolution::Found {
                    function: route.function.clone(),
                    path: route.template.spell(&request),
                };
            }
            for accepted in &route.methods {
                if !allow.contains(accepted) {
                    allow.push(accepted.clone());
                }
            }
        }
        if allow.is_empty() {
            Resolution::NotFound
        } else {
            allow.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            Resolution::WrongMethod { allow }
        }
    }
}

/// A set of functions: the routes they declare and the warp filter that serves them.
pub struct Functions {
    table: Option<RouteTable>,
    filter: BoxedFilter<(Response,)>,
}

impl Functions {
    /// Functions whose routes are `table`, served by `filter`.
    pub fn new(table: RouteTable, filter: BoxedFilter<(Response,)>) -> Self {
        Self {
            table: Some(table),
            filter,
        }
    }

    /// Both sets: the tables merged, `other`'s filter tried after this one's.
    pub fn or(self, other: Functions) -> Self {
        // With a bare filter on either side, nothing may be refused by a table that does not
        // know its routes: the whole set goes undeclared.
        let table = match (self.table, other.table) {
            (Some(mine), Some(theirs)) => Some(mine.merge(theirs)),
            _ => None,
        };
        Self {
            table,
            filter: self.filter.or(other.filter).unify().boxed(),
        }
    }

    /// The declared routes (`None` for a bare filter, see the `From` conversion).
    pub fn table(&self) -> Option<&RouteTable> {
        self.table.as_ref()
    }

    pub(crate) fn into_parts(self) -> (Option<RouteTable>, BoxedFilter<(Response,)>) {
        (self.table, self.filter)
    }
}

/// A bare filter, with no route table: every request goes to it as it came, and warp's own
/// rejections decide between 404 and 405 (for tests of one module's filters).
impl From<BoxedFilter<(Response,)>> for Functions {
    fn from(filter: BoxedFilter<(Response,)>) -> Self {
        Self {
            table: None,
            filter,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn table() -> RouteTable {
        RouteTable::new()
            .http("Deposit", &[Method::POST], "Deposit/{accountnumber}")
            .http("GetBalance", &[Method::GET], "GetBalance/{accountnumber}")
            .http("Accounts", &[Method::GET], "Accounts")
            .http("Append", &[Method::POST], "streams/{d}/{e}/{i}")
            .http("Read", &[Method::GET], "streams/{d}/{e}/{i}")
            .http("List", &[Method::GET], "streams/{d}/{e}")
            .http("Hook", &[Method::POST, Method::OPTIONS], "eventgrid")
            .http("Files", &[Method::GET], "files/{*rest}")
            .http("Special", &[Method::POST], "items/special")
            .http("Item", &[Method::GET], "items/{id}")
            .http("Maybe", &[Method::GET], "maybe/{id?}")
            .invocation("Projector")
            .fallback("NotFound", &[Method::GET, Method::POST], "{*path}")
    }

    fn found(function: &str, path: &str) -> Resolution {
        Resolution::Found {
            function: function.into(),
            path: path.into(),
        }
    }

    #[test]
    fn literal_segments_match_ignoring_case_and_take_the_template_spelling() {
        let t = table();
        assert_eq!(
            t.resolve(&Method::POST, "/api/deposit/ACC-1"),
            found("Deposit", "/api/Deposit/ACC-1")
        );
        assert_eq!(
            t.resolve(&Method::POST, "/API/DEPOSIT/acc-1"),
            found("Deposit", "/api/Deposit/acc-1"),
            "parameters keep their case"
        );
        assert_eq!(
            t.resolve(&Method::GET, "/Api/STREAMS/Bank/Account/a%20b"),
            found("Read", "/api/streams/Bank/Account/a%20b"),
            "parameters stay percent-encoded"
        );
        assert_eq!(
            t.resolve(&Method::POST, "/api/%44eposit/x"),
            found("Deposit", "/api/Deposit/x"),
            "a literal is compared decoded"
        );
        assert_eq!(
            t.resolve(&Method::POST, "/projector"),
            found("Projector", "/Projector")
        );
    }

    #[test]
    fn an_optional_last_parameter_may_be_left_out() {
        let t = RouteTable::new().http("Transfer", &[Method::POST], "TransferMoney/{id?}");
        assert_eq!(
            t.resolve(&Method::POST, "/api/transfermoney/T-1"),
            found("Transfer", "/api/TransferMoney/T-1")
        );
        assert_eq!(
            t.resolve(&Method::POST, "/api/TransferMoney"),
            found("Transfer", "/api/TransferMoney")
        );
        assert_eq!(
            t.resolve(&Method::POST, "/api/TransferMoney/"),
            found("Transfer", "/api/TransferMoney")
        );
        assert!(!matches!(
            t.resolve(&Method::POST, "/api/TransferMoney/a/b"),
            Resolution::Found { .. }
        ));
        // A parameter without `?` may not be left out.
        let strict = RouteTable::new().http("Deposit", &[Method::POST], "Deposit/{n}");
        assert!(!matches!(
            strict.resolve(&Method::POST, "/api/Deposit"),
            Resolution::Found { .. }
        ));
    }

    #[test]
    fn case_is_ignored_as_dotnet_ordinal_ignore_case_ignores_it() {
        let t = RouteTable::new().http("K", &[Method::GET], "Kelvin").http(
            "W",
            &[Method::GET],
            "Withdraw",
        );
        // KELVIN SIGN lowercases to `k`, but its uppercase is itself: not a `K` to .NET.
        assert_eq!(
            t.resolve(&Method::GET, "/api/%E2%84%AAelvin"),
            Resolution::NotFound
        );
        // The dotless ı uppercases to `I` in Unicode, not in .NET's ordinal comparison.
        assert_eq!(
            t.resolve(&Method::GET, "/api/w%C4%B1thdraw"),
            Resolution::NotFound
        );
        assert_eq!(
            t.resolve(&Method::GET, "/api/wITHDRAW"),
            found("W", "/api/Withdraw")
        );
        assert!(ordinal_eq_ignore_case("straße", "STRAßE"));
        assert!(
            ordinal_eq_ignore_case("Ⱥx", "ⱥX"),
            "different UTF-8 lengths"
        );
        assert!(!ordinal_eq_ignore_case("ıs", "IS"));
        assert!(!ordinal_eq_ignore_case("IS", "iſ"));
        assert!(ordinal_eq_ignore_case("éte", "ÉTE"));
        assert!(!ordinal_eq_ignore_case("straße", "STRASSE"));
    }

    /// What lets [`ordinal_eq_ignore_case`] compare bytes when one side is ASCII.
    #[test]
    fn only_ascii_characters_are_ascii_in_the_ordinal_comparison() {
        for c in (0..=u32::from(char::MAX)).filter_map(char::from_u32) {
            assert_eq!(ordinal_upper(c).is_ascii(), c.is_ascii(), "{c:?}");
        }
    }

    #[test]
    fn an_optional_parameter_matches_one_segment_or_none() {
        let t = table();
        assert_eq!(
            t.resolve(&Method::GET, "/api/MAYBE"),
            found("Maybe", "/api/maybe")
        );
        assert_eq!(
            t.resolve(&Method::GET, "/api/maybe/2024-01-01"),
            found("Maybe", "/api/maybe/2024-01-01")
        );
        assert_eq!(
            t.resolve(&Method::GET, "/api/maybe/a/b"),
            Resolution::NotFound
        );
    }

    #[test]
    fn paths_split_as_the_host_splits_them() {
        assert_eq!(tokenize("/"), vec![]);
        assert_eq!(tokenize(""), vec![]);
        assert_eq!(tokenize("/api"), vec![(1, "api")]);
        assert_eq!(tokenize("/api/"), vec![(1, "api")]);
        assert_eq!(tokenize("/api//"), vec![(1, "api"), (5, "")]);
        assert_eq!(tokenize("//"), vec![(1, "")]);
        assert_eq!(tokenize("/a/bc/d"), vec![(1, "a"), (3, "bc"), (6, "d")]);
        let t = table();
        assert_eq!(
            t.resolve(&Method::GET, "/api/Accounts/"),
            found("Accounts", "/api/Accounts"),
            "one trailing slash is ignored"
        );
        for path in [
            "/api/Accounts//",
            "//api/Accounts",
            "/api//Accounts",
            "/api/GetBalance//",
        ] {
            assert_eq!(
                t.resolve(&Method::GET, path),
                Resolution::NotFound,
                "{path}"
            );
        }
    }

    #[test]
    fn unknown_paths_are_not_found_and_known_ones_with_another_method_are_405() {
        let t = table();
        for (method, path) in [
            (Method::GET, "/api/NoSuchFunction/1"),
            (Method::GET, "/api/"),
            (Method::GET, "/api"),
            (Method::GET, "/api/GetBalance/X/extra"),
            (Method::GET, "/api/GetBalance"),
            (Method::POST, "/NoSuchFunction"),
            (Method::GET, "/"),
        ] {
            assert_eq!(
                t.resolve(&method, path),
                Resolution::NotFound,
                "{method} {path}"
            );
        }
        assert_eq!(
            t.resolve(&Method::GET, "/api/deposit/1"),
            Resolution::WrongMethod {
                allow: vec![Method::POST]
            }
        );
        assert_eq!(
            t.resolve(&Method::DELETE, "/api/streams/a/b/c"),
            Resolution::WrongMethod {
                allow: vec![Method::GET, Method::POST]
            }
        );
        assert_eq!(
            t.resolve(&Method::GET, "/api/eventgrid"),
            Resolution::WrongMethod {
                allow: vec![Method::OPTIONS, Method::POST]
            }
        );
        assert_eq!(
            t.resolve(&Method::GET, "/Projector"),
            Resolution::WrongMethod {
                allow: vec![Method::POST]
            }
        );
        let ready = RouteTable::new().readiness();
        assert_eq!(ready.resolve(&Method::GET, "/"), found("", "/"));
        assert_eq!(
            ready.resolve(&Method::POST, "/"),
            Resolution::WrongMethod {
                allow: vec![Method::GET]
            }
        );
    }

    #[test]
    fn routes_are_tried_in_the_hosts_order_of_precedence() {
        let t = table();
        assert_eq!(
            t.resolve(&Method::POST, "/api/ITEMS/SPECIAL"),
            found("Special", "/api/items/special")
        );
        // The literal route does not take GET; the parameter route does, and keeps the value.
        assert_eq!(
            t.resolve(&Method::GET, "/api/ITEMS/SPECIAL"),
            found("Item", "/api/items/SPECIAL")
        );
        let order: Vec<&str> = t.routes().iter().map(|r| r.function()).collect();
        assert_eq!(
            order,
            [
                "Accounts",
                "Deposit",
                "Hook",
                "Files",
                "GetBalance",
                "Special",
                "Item",
                "Maybe",
                "Append",
                "Read",
                "List",
                "NotFound",
                "Projector"
            ]
        );
    }

    #[test]
    fn a_catch_all_takes_the_rest_of_the_path_as_it_came() {
        let t = table();
        assert_eq!(
            t.resolve(&Method::GET, "/API/Files/a//B/"),
            found("Files", "/api/files/a//B/")
        );
        assert_eq!(
            t.resolve(&Method::GET, "/api/files"),
            found("Files", "/api/files")
        );
        assert_eq!(
            t.resolve(&Method::GET, "/api/files//a"),
            Resolution::NotFound,
            "an empty segment where the catch-all starts"
        );
    }

    /// The routing as it was before `resolve` learned to decide without allocating: every
    /// template builds its spelling of the path while it matches. Kept word for word (but for
    /// the names) as the reference the property below compares [`RouteTable::resolve`] with.
    mod reference {
        use super::super::*;

        fn tokenize(path: &str) -> Vec<(usize, &str)> {
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

        fn ordinal_eq_ignore_case(a: &str, b: &str) -> bool {
            a.chars().count() == b.chars().count()
                && a.chars()
                    .zip(b.chars())
                    .all(|(x, y)| x == y || ordinal_upper(x) == ordinal_upper(y))
        }

        fn canonical(
            template: &Template,
            path: &str,
            segments: &[(usize, &str)],
        ) -> Option<String> {
            let mut canonical = String::with_capacity(path.len());
            for (index, segment) in template.segments.iter().enumerate() {
                let request = segments.get(index);
                if request.is_some_and(|(_, raw)| raw.is_empty()) {
                    return None;
                }
                match segment {
                    Segment::CatchAll => {
                        if let Some(rest) = request.and_then(|(start, _)| path.get(*start..)) {
                            canonical.push('/');
                            canonical.push_str(rest);
                        }
                        return Some(canonical);
                    }
                    Segment::Literal(literal) => {
                        let (_, raw) = request?;
                        let decoded = percent_decode_str(raw).decode_utf8().ok()?;
                        if !ordinal_eq_ignore_case(&decoded, literal) {
                            return None;
                        }
                        canonical.push('/');
                        canonical.push_str(literal);
                    }
                    Segment::Parameter { optional } => {
                        let Some((_, raw)) = request else {
                            let last = index.saturating_add(1) == template.segments.len();
                            return (*optional && last && !canonical.is_empty())
                                .then_some(canonical);
                        };
                        canonical.push('/');
                        canonical.push_str(raw);
                    }
                }
            }
            if segments.len() > template.segments.len() {
                return None;
            }
            if canonical.is_empty() {
                canonical.push('/');
            }
            Some(canonical)
        }

        pub fn resolve(table: &RouteTable, method: &Method, path: &str) -> Resolution {
            let segments = tokenize(path);
            let mut allow: Vec<Method> = Vec::new();
            for route in &table.routes {
                if route.kind == RouteKind::Fallback {
                    continue;
                }
                let Some(canonical) = canonical(&route.template, path, &segments) else {
                    continue;
                };
                if route.methods.contains(method) {
                    return Resolution::Found {
                        function: route.function.clone(),
                        path: canonical,
                    };
                }
                for accepted in &route.methods {
                    if !allow.contains(accepted) {
                        allow.push(accepted.clone());
                    }
                }
            }
            if allow.is_empty() {
                Resolution::NotFound
            } else {
                allow.sort_by(|a, b| a.as_str().cmp(b.as_str()));
                Resolution::WrongMethod { allow }
            }
        }
    }

    /// The routes of the handler's apps (the library's, the bank's and the inventory
    /// example's, as their function.json files declare them, in one table) and the readiness
    /// answer.
    fn apps_table() -> RouteTable {
        let (get, post, delete, options) =
            (Method::GET, Method::POST, Method::DELETE, Method::OPTIONS);
        let mut t = RouteTable::new().readiness();
        for (function, methods, template) in [
            ("Accounts", &[get.clone()][..], "Accounts"),
            (
                "AccrueInterest",
                &[post.clone()][..],
                "AccrueInterest/{accountnumber}",
            ),
            (
                "AppendEvents",
                &[post.clone()][..],
                "streams/{domain}/{entity}/{instance}",
            ),
            (
                "BalanceSeries",
                &[get.clone()][..],
                "BalanceSeries/{accountnumber}",
            ),
            (
                "CancelMoneyTransfer",
                &[post.clone()][..],
                "CancelMoneyTransfer/{transferId}",
            ),
            (
                "CloseAccount",
                &[post.clone()][..],
                "CloseAccount/{accountnumber}",
            ),
            (
                "DeadLetters",
                &[get.clone()][..],
                "notifications/deadletters",
            ),
            (
                "DeleteAccount",
                &[post.clone()][..],
                "DeleteAccount/{accountnumber}",
            ),
            (
                "DeleteStream",
                &[delete.clone()][..],
                "streams/{domain}/{entity}/{instance}",
            ),
            ("Deposit", &[post.clone()][..], "Deposit/{accountnumber}"),
            (
                "DepositMoney",
                &[post.clone()][..],
                "DepositMoney/{accountnumber}",
            ),
            (
                "EventGridWebhook",
                &[post.clone(), options.clone()][..],
                "eventgrid",
            ),
            (
                "GetAccountHistory",
                &[get.clone()][..],
                "GetAccountHistory/{accountnumber}",
            ),
            (
                "GetAllAccounts",
                &[get.clone()][..],
                "GetAllAccounts/{asOfDate?}",
            ),
            (
                "GetBalance",
                &[get.clone()][..],
                "GetBalance/{accountnumber}",
            ),
            (
                "GetBalanceAsOfDate",
                &[get.clone()][..],
                "GetBalance/{accountnumber}/{asOfDate}",
            ),
            (
                "GetTransferState",
                &[get.clone()][..],
                "GetTransferState/{transferId}",
            ),
            (
                "ListStreams",
                &[get.clone()][..],
                "streams/{domain}/{entity}",
            ),
            (
                "OpenAccount",
                &[post.clone()][..],
                "OpenAccount/{accountnumber}",
            ),
            ("OpenApi", &[get.clone()][..], "openapi.json"),
            (
                "PayInterest",
                &[post.clone()][..],
                "PayInterest/{accountnumber}",
            ),
            (
                "ReadStream",
                &[get.clone()][..],
                "streams/{domain}/{entity}/{instance}",
            ),
            (
                "RebuildReadModels",
                &[post.clone()][..],
                "RebuildReadModels",
            ),
            (
                "RecentNotifications",
                &[get.clone()][..],
                "notifications/recent",
            ),
            (
                "RedriveDeadLetters",
                &[post.clone()][..],
                "notifications/deadletters/redrive",
            ),
            (
                "RunProjection",
                &[get.clone()][..],
                "projections/{domain}/{entity}/{instance}/{projection}",
            ),
            (
                "SetOverdraftLimit",
                &[post.clone()][..],
                "SetOverdraftLimit/{accountnumber}",
            ),
            (
                "TransferMoney",
                &[post.clone()][..],
                "TransferMoney/{transferId?}",
            ),
            ("Web", &[get.clone()][..], "web/{*path}"),
            ("Withdraw", &[post.clone()][..], "Withdraw/{accountnumber}"),
            (
                "WithdrawMoney",
                &[post.clone()][..],
                "WithdrawMoney/{accountnumber}",
            ),
            ("GetItem", &[get.clone()][..], "GetItem/{sku}"),
            ("Items", &[get.clone()][..], "Items"),
            ("RebuildItems", &[post.clone()][..], "RebuildItems"),
            ("ReceiveStock", &[post.clone()][..], "ReceiveStock/{sku}"),
            ("ReserveStock", &[post.clone()][..], "ReserveStock/{sku}"),
            ("ShipStock", &[post.clone()][..], "ShipStock/{sku}"),
        ] {
            t = t.http(function, methods, template);
        }
        for function in [
            "Projector",
            "NotificationSweep",
            "TransferSweep",
            "AccrueInterestTimer",
        ] {
            t = t.invocation(function);
        }
        t.fallback("NotFound", &[get, post, delete, options], "{*path}")
    }

    /// Templates no app declares but the table accepts: non-ASCII literals, an optional
    /// parameter that is not last or is all there is, a catch-all that is not last, a bare
    /// prefix, and the unit tests' table.
    fn odd_table() -> RouteTable {
        table()
            .readiness()
            .http("Strasse", &[Method::GET], "Straße/{id}")
            .http("Cafe", &[Method::POST], "Café/{id}")
            .http("Dotted", &[Method::GET], "İtems/{id}")
            .http("LongS", &[Method::POST], "ſpecial")
            .http("Kelvin", &[Method::GET], "\u{212A}elvin/{id?}")
            .http("Middle", &[Method::GET], "a/{x?}/b")
            .http("Inner", &[Method::PUT], "c/{*x}/d")
            .http("Prefix", &[Method::PATCH], "")
            .http("Tilde", &[Method::GET], "~/tilde/{t}")
            .http("Two", &[Method::HEAD], "{x}/{y?}")
            .invocation("{only?}")
    }

    /// A catch-all with nothing before it, which matches every path (so it gets a table of its
    /// own, where it hides nothing else).
    fn catch_all_table() -> RouteTable {
        RouteTable::new()
            .readiness()
            .http("Accounts", &[Method::GET], "Accounts")
            .invocation("{*everything}")
    }

    /// The tables, built once.
    static TABLES: std::sync::LazyLock<[RouteTable; 3]> =
        std::sync::LazyLock::new(|| [apps_table(), odd_table(), catch_all_table()]);

    /// Every template of the tables, segment by segment.
    static SHAPES: std::sync::LazyLock<Vec<Vec<Segment>>> = std::sync::LazyLock::new(|| {
        TABLES
            .iter()
            .flat_map(|t| t.routes.iter())
            .map(|r| r.template.segments.clone())
            .collect()
    });

    /// Every literal segment of the tables' templates.
    static LITERALS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        let mut literals: Vec<String> = SHAPES
            .iter()
            .flatten()
            .filter_map(|s| match s {
                Segment::Literal(l) => Some(l.clone()),
                _ => None,
            })
            .collect();
        literals.sort();
        literals.dedup();
        literals
    });

    /// How one character of a literal is spelled in a generated path.
    #[derive(Debug, Clone, Copy)]
    enum Spelling {
        AsIs,
        OtherCase,
        Escaped,
        EscapedLower,
        /// A non-ASCII look-alike where there is one (`ı`, `İ` for `i`; `ſ` for `s`;
        /// the Kelvin sign for `k`; `ß` for `s`; `ẞ` for `ß`).
        LookAlike,
    }

    fn spell_char(c: char, how: Spelling, out: &mut String) {
        match how {
            Spelling::AsIs => out.push(c),
            Spelling::OtherCase if c.is_lowercase() => out.extend(c.to_uppercase()),
            Spelling::OtherCase => out.extend(c.to_lowercase()),
            Spelling::Escaped | Spelling::EscapedLower => {
                let mut buf = [0; 4];
                for byte in c.encode_utf8(&mut buf).bytes() {
                    if matches!(how, Spelling::Escaped) {
                        out.push_str(&format!("%{byte:02X}"));
                    } else {
                        out.push_str(&format!("%{byte:02x}"));
                    }
                }
            }
            Spelling::LookAlike => out.push(match c {
                'i' => 'ı',
                'I' => 'İ',
                's' => 'ſ',
                'S' => 'ß',
                'k' | 'K' => '\u{212A}',
                'ß' => 'ẞ',
                'e' => 'é',
                other => other,
            }),
        }
    }

    fn spelling() -> impl Strategy<Value = Spelling> {
        prop_oneof![
            20 => Just(Spelling::AsIs),
            12 => Just(Spelling::OtherCase),
            1 => Just(Spelling::Escaped),
            1 => Just(Spelling::EscapedLower),
            1 => Just(Spelling::LookAlike),
        ]
    }

    /// `literal` spelled with mixed case, escapes and look-alikes.
    fn spelled(literal: String) -> impl Strategy<Value = String> {
        proptest::collection::vec(spelling(), 0..24).prop_map(move |spellings| {
            let mut out = String::new();
            for (index, c) in literal.chars().enumerate() {
                let how = spellings.get(index).copied().unwrap_or(Spelling::AsIs);
                spell_char(c, how, &mut out);
            }
            out
        })
    }

    /// Random text with escapes (valid, invalid UTF-8, malformed) and non-ASCII letters.
    const RANDOM_SEGMENT: &str = "([a-zA-Z0-9._~ -]|ı|ſ|ß|ẞ|İ|é|\u{212A}|%[0-9a-fA-F]{2}|%C4%B1|%E2%84%AA|%FF|%C4|%|%G1|%2F){0,6}";

    /// One request segment: a template's literal (spelled), random text, or nothing.
    fn request_segment() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => proptest::sample::select(LITERALS.as_slice()).prop_flat_map(spelled),
            4 => RANDOM_SEGMENT,
            1 => Just(String::new()),
        ]
    }

    /// The segments of a path meant for one of the templates: each literal spelled, a
    /// parameter any segment, a catch-all none to three; then perhaps one segment left out,
    /// emptied, replaced or added.
    fn segments_for_a_template() -> impl Strategy<Value = Vec<String>> {
        proptest::sample::select(SHAPES.as_slice())
            .prop_flat_map(|shape| {
                let segments: Vec<BoxedStrategy<Vec<String>>> = shape
                    .into_iter()
                    .map(|segment| match segment {
                        Segment::Literal(l) => spelled(l).prop_map(|s| vec![s]).boxed(),
                        Segment::Parameter { .. } => prop_oneof![
                            9 => request_segment().prop_map(|s| vec![s]),
                            1 => Just(Vec::new()),
                        ]
                        .boxed(),
                        Segment::CatchAll => {
                            proptest::collection::vec(request_segment(), 0..4).boxed()
                        }
                    })
                    .collect();
                (
                    segments,
                    0..6usize,
                    any::<proptest::sample::Index>(),
                    request_segment(),
                )
            })
            .prop_map(|(segments, mutation, at, other)| {
                let mut segments: Vec<String> = segments.into_iter().flatten().collect();
                if !segments.is_empty() {
                    let at = at.index(segments.len());
                    match mutation {
                        0 => drop(segments.remove(at)),
                        1 => segments[at].clear(),
                        2 => segments[at] = other,
                        3 => segments.insert(at, other),
                        _ => {}
                    }
                } else if mutation < 2 {
                    segments.push(other);
                }
                segments
            })
    }

    /// A request path: mostly `/` and segments, sometimes with one or two trailing slashes or
    /// (as no server forwards it, but the table must answer anything) without the leading one.
    fn request_path() -> impl Strategy<Value = String> {
        (
            prop_oneof![9 => Just("/"), 1 => Just("")],
            prop_oneof![
                4 => segments_for_a_template(),
                1 => proptest::collection::vec(request_segment(), 0..7),
            ],
            prop_oneof![6 => Just(""), 3 => Just("/"), 1 => Just("//")],
        )
            .prop_map(|(lead, segments, trail)| format!("{lead}{}{trail}", segments.join("/")))
    }

    /// Mostly the methods the apps' functions take.
    fn method() -> impl Strategy<Value = Method> {
        prop_oneof![
            4 => Just(Method::GET),
            4 => Just(Method::POST),
            1 => proptest::sample::select(vec![
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
                Method::HEAD,
                Method::OPTIONS,
            ]),
        ]
    }

    proptest::proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn resolve_answers_as_the_reference_does(
            method in method(),
            path in request_path(),
        ) {
            for t in TABLES.iter() {
                prop_assert_eq!(
                    t.resolve(&method, &path),
                    reference::resolve(t, &method, &path),
                    "{} {:?}", method, path
                );
            }
        }
    }
}
