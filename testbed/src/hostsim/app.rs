//! The function app as the Functions host reads it from disk: `host.json`, one
//! `function.json` per function folder, and `local.settings.json`.
//!
//! Guarantees, mirroring the real host:
//! - only folders ONE level below the app root are functions (a deeper `function.json` is not
//!   found); the function's name is its folder's name; functions are listed in name order;
//! - JSON keys are matched case-insensitively, as .NET configuration binding does;
//! - the `customHandler` section is required (the simulator runs custom handlers only);
//!   `description.defaultExecutablePath`, `arguments`, `workingDirectory`, `workerDirectory`,
//!   `defaultWorkerPath`, `enableProxyingHttpRequest` and `enableForwardingHttpRequest` (both
//!   default false) and `extensions.http.routePrefix` (default `api`) are honoured;
//! - a function gets raw HTTP (rather than the JSON payload) only when it has exactly one
//!   input, an `httpTrigger`, and one output, of type `http` (`IsHttpInAndOutFunction` in the
//!   host), and one of the two flags is on; proxying wins when both are, as the host's
//!   `DefaultHttpWorkerService.InvokeAsync` checks it first (docs/host-modes.md);
//! - a function whose `function.json` can't be used is skipped with its reason kept in
//!   [`AppDefinition::errors`], as the host skips a function in error and runs the rest;
//! - `disabled: true` in function.json or the setting `AzureWebJobs.{name}.Disabled` = `true`
//!   or `1` disables a function (no route, no timer, 404 on the webhook and admin endpoints);
//! - `%Name%` in a timer's `schedule` is replaced by the app setting `Name`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::{Map, Value};

use super::ncrontab::Schedule;
use super::route::RouteTemplate;

/// The file at the app root holding the host's configuration.
pub const HOST_JSON: &str = "host.json";
/// The file in each function folder describing its bindings.
pub const FUNCTION_JSON: &str = "function.json";
/// The (uncommitted) file holding local app settings under `Values`.
pub const LOCAL_SETTINGS_JSON: &str = "local.settings.json";
/// The route prefix when host.json doesn't set `extensions.http.routePrefix`.
pub const DEFAULT_ROUTE_PREFIX: &str = "api";

/// How the handler is started (host.json `customHandler.description`).
#[derive(Debug, Clone)]
pub struct HandlerDescription {
    pub default_executable_path: String,
    pub default_worker_path: Option<String>,
    pub arguments: Vec<String>,
    pub worker_arguments: Vec<String>,
    /// Where a relative executable path is looked up (default: the app root).
    pub worker_directory: PathBuf,
    /// The handler's current directory (default: the app root).
    pub working_directory: PathBuf,
}

/// How the host hands an HTTP-in/HTTP-out function's request to the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpDelivery {
    /// `enableProxyingHttpRequest`: YARP proxies the request and streams both bodies.
    Proxied,
    /// `enableForwardingHttpRequest` (the legacy mode): the host rebuilds the request.
    Forwarded,
    /// Neither flag: the JSON invocation payload, as for every other trigger.
    Payload,
}

/// Everything the simulator needs from host.json.
#[derive(Debug, Clone)]
pub struct HostSettings {
    pub handler: HandlerDescription,
    pub enable_forwarding_http_request: bool,
    pub enable_proxying_http_request: bool,
    pub route_prefix: String,
    /// host.json `functionTimeout` (`hh:mm:ss`), when set and not `-1`.
    pub function_timeout: Option<Duration>,
}

impl HostSettings {
    /// How an HTTP function's requests reach the handler: raw HTTP only for HTTP-in/HTTP-out
    /// functions, proxying first, then forwarding (`DefaultHttpWorkerService.InvokeAsync`).
    pub fn http_delivery(&self, http_in_and_out: bool) -> HttpDelivery {
        match (
            http_in_and_out,
            self.enable_proxying_http_request,
            self.enable_forwarding_http_request,
        ) {
            (true, true, _) => HttpDelivery::Proxied,
            (true, false, true) => HttpDelivery::Forwarded,
            _ => HttpDelivery::Payload,
        }
    }
}

/// One binding of a function.json.
#[derive(Debug, Clone)]
pub struct Binding {
    pub kind: String,
    pub direction: Direction,
    pub name: String,
    pub raw: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
    InOut,
}

/// What starts a function.
#[derive(Debug, Clone)]
pub enum Trigger {
    Http(HttpTrigger),
    EventGrid {
        binding: String,
    },
    Timer {
        binding: String,
        schedule: Schedule,
        run_on_startup: bool,
    },
    /// Any other trigger type: invocable through the admin endpoint only.
    Other {
        kind: String,
        binding: String,
    },
}

/// An HTTP trigger's routing.
#[derive(Debug, Clone)]
pub struct HttpTrigger {
    pub binding: String,
    /// Upper-case methods; `None` means every method.
    pub methods: Option<Vec<String>>,
    pub route: RouteTemplate,
    /// How requests reach the handler (raw HTTP, proxied or forwarded, or the JSON payload).
    pub delivery: HttpDelivery,
    /// The `http` output binding's name (`res`, `$return`, ...), if any.
    pub output: Option<String>,
}

/// One function of the app.
#[derive(Debug, Clone)]
pub struct FunctionDef {
    pub name: String,
    pub dir: PathBuf,
    pub bindings: Vec<Binding>,
    pub trigger: Trigger,
    pub disabled: bool,
}

impl FunctionDef {
    /// A short description of the trigger, for logs (`POST api/x`, `eventGridTrigger`, ...).
    pub fn describe(&self) -> String {
        match &self.trigger {
            Trigger::Http(http) => {
                let methods = http
                    .methods
                    .as_ref()
                    .map(|m| m.join(","))
                    .unwrap_or_else(|| "all methods".into());
                format!("[{methods}] /{}", http.route.text())
            }
            Trigger::EventGrid { .. } => "eventGridTrigger".into(),
            Trigger::Timer { schedule, .. } => format!("timerTrigger {}", schedule.expression()),
            Trigger::Other { kind, .. } => kind.clone(),
        }
    }
}

/// The whole app.
#[derive(Debug, Clone)]
pub struct AppDefinition {
    pub root: PathBuf,
    pub host: HostSettings,
    pub functions: Vec<FunctionDef>,
    /// Indexes into `functions` of the HTTP functions, in the order the host tries their
    /// routes (see [`RouteTemplate::precedence`]; ties keep folder order).
    pub http_routes: Vec<usize>,
    /// Functions that could not be loaded: (folder name, reason).
    pub errors: Vec<(String, String)>,
}

impl AppDefinition {
    /// Reads host.json and the function folders of `root`; `settings` are the app settings
    /// (used for `%Name%` references and `AzureWebJobs.{name}.Disabled`).
    pub fn load(root: &Path, settings: &BTreeMap<String, String>) -> anyhow::Result<Self> {
        let root = root
            .canonicalize()
            .with_context(|| format!("app directory {}", root.display()))?;
        let host_path = root.join(HOST_JSON);
        let host_json = read_json(&host_path)?;
        let host = parse_host(&root, &host_json)
            .with_context(|| format!("reading {}", host_path.display()))?;
        let mut folders: Vec<PathBuf> = std::fs::read_dir(&root)
            .with_context(|| format!("listing {}", root.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.is_dir() && path.join(FUNCTION_JSON).is_file())
            .collect();
        folders.sort();
        let mut functions = Vec::new();
        let mut errors = Vec::new();
        for dir in folders {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match parse_function(&name, &dir, &host, settings) {
                Ok(function) => functions.push(function),
                Err(error) => errors.push((name, format!("{error:#}"))),
            }
        }
        let mut http_routes: Vec<usize> = functions
            .iter()
            .enumerate()
            .filter(|(_, f)| matches!(f.trigger, Trigger::Http(_)))
            .map(|(index, _)| index)
            .collect();
        http_routes.sort_by(
            |&a, &b| match (&functions[a].trigger, &functions[b].trigger) {
                (Trigger::Http(x), Trigger::Http(y)) => x.route.precedence(&y.route),
                _ => std::cmp::Ordering::Equal,
            },
        );
        Ok(Self {
            root,
            host,
            functions,
            http_routes,
            errors,
        })
    }

    /// The function with this name (exact match first, then ignoring case, as the admin API does).
    pub fn function(&self, name: &str) -> Option<&FunctionDef> {
        self.functions.iter().find(|f| f.name == name).or_else(|| {
            self.functions
                .iter()
                .find(|f| f.name.eq_ignore_ascii_case(name))
        })
    }
}

/// `Values` of `local.settings.json` in `root`, or nothing when the file is absent.
pub fn read_local_settings(root: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let path = root.join(LOCAL_SETTINGS_JSON);
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let json = read_json(&path)?;
    let mut values = Vec::new();
    if let Some(Value::Object(map)) = get_ci(&json, "Values") {
        for (key, value) in map {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            values.push((key.clone(), text));
        }
    }
    Ok(values)
}

/// `Host.LocalHttpPort` of `local.settings.json` in `root`, when set.
pub fn local_http_port(root: &Path) -> Option<u16> {
    let json = read_json(&root.join(LOCAL_SETTINGS_JSON)).ok()?;
    let port = get_ci(get_ci(&json, "Host")?, "LocalHttpPort")?;
    match port {
        Value::Number(n) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    // Tolerate a UTF-8 byte order mark, which editors on Windows add.
    serde_json::from_str(text.trim_start_matches('\u{feff}'))
        .with_context(|| format!("{} is not valid JSON", path.display()))
}

/// A key of a JSON object, ignoring case.
pub fn get_ci<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    let object = value.as_object()?;
    object.get(key).or_else(|| {
        object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn get_str<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    get_ci(value, key).and_then(Value::as_str)
}

fn get_bool(value: &Value, key: &str) -> Option<bool> {
    match get_ci(value, key)? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// An array of strings as a list (any other item as its JSON text); anything else, none.
pub(crate) fn string_list(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn relative_to(root: &Path, dir: Option<&str>) -> PathBuf {
    match dir {
        Some(d) if !d.is_empty() => {
            let p = Path::new(d);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                root.join(p)
            }
        }
        _ => root.to_path_buf(),
    }
}

fn parse_host(root: &Path, json: &Value) -> anyhow::Result<HostSettings> {
    let section = get_ci(json, "customHandler").ok_or_else(|| {
        anyhow!("no customHandler section: the simulator runs custom handlers only")
    })?;
    let description = get_ci(section, "description")
        .ok_or_else(|| anyhow!("customHandler has no description"))?;
    let executable = get_str(description, "defaultExecutablePath")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| anyhow!("customHandler.description.defaultExecutablePath is missing"))?;
    let handler = HandlerDescription {
        default_executable_path: executable.to_string(),
        default_worker_path: get_str(description, "defaultWorkerPath")
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        arguments: string_list(get_ci(description, "arguments")),
        worker_arguments: string_list(get_ci(description, "workerArguments")),
        worker_directory: relative_to(root, get_str(description, "workerDirectory")),
        working_directory: relative_to(root, get_str(description, "workingDirectory")),
    };
    let route_prefix = get_ci(json, "extensions")
        .and_then(|e| get_ci(e, "http"))
        .and_then(|h| get_str(h, "routePrefix"))
        .unwrap_or(DEFAULT_ROUTE_PREFIX)
        .trim_matches('/')
        .to_string();
    let function_timeout = match get_str(json, "functionTimeout") {
        None | Some("-1") => None,
        Some(text) => Some(parse_timespan(text)?),
    };
    Ok(HostSettings {
        handler,
        enable_forwarding_http_request: get_bool(section, "enableForwardingHttpRequest")
            .unwrap_or(false),
        enable_proxying_http_request: get_bool(section, "enableProxyingHttpRequest")
            .unwrap_or(false),
        route_prefix,
        function_timeout,
    })
}

/// A .NET TimeSpan `[d.]hh:mm:ss`.
fn parse_timespan(text: &str) -> anyhow::Result<Duration> {
    let (days, clock) = match text.split_once('.') {
        Some((d, rest)) if !d.contains(':') => (d.parse::<u64>().ok(), rest),
        _ => (Some(0), text),
    };
    let parts: Vec<u64> = clock
        .split(':')
        .map(|p| p.split('.').next().unwrap_or(p).parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow!("functionTimeout {text:?} is not hh:mm:ss"))?;
    match (days, parts.as_slice()) {
        (Some(d), [h, m, s]) => Ok(Duration::from_secs(d * 86_400 + h * 3_600 + m * 60 + s)),
        _ => bail!("functionTimeout {text:?} is not hh:mm:ss"),
    }
}

fn parse_function(
    name: &str,
    dir: &Path,
    host: &HostSettings,
    settings: &BTreeMap<String, String>,
) -> anyhow::Result<FunctionDef> {
    let json = read_json(&dir.join(FUNCTION_JSON))?;
    let list = get_ci(&json, "bindings")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("function.json has no bindings array"))?;
    let mut bindings = Vec::new();
    for raw in list {
        let kind = get_str(raw, "type")
            .ok_or_else(|| anyhow!("a binding has no type"))?
            .to_string();
        let direction = match get_str(raw, "direction")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("in") => Direction::In,
            Some("out") => Direction::Out,
            Some("inout") => Direction::InOut,
            other => bail!("binding {kind} has direction {other:?}; expected in, out or inout"),
        };
        let binding_name = get_str(raw, "name")
            .ok_or_else(|| anyhow!("binding {kind} has no name"))?
            .to_string();
        bindings.push(Binding {
            kind,
            direction,
            name: binding_name,
            raw: raw.as_object().cloned().unwrap_or_default(),
        });
    }
    let triggers: Vec<&Binding> = bindings
        .iter()
        .filter(|b| b.kind.to_ascii_lowercase().ends_with("trigger"))
        .collect();
    let trigger = match triggers.as_slice() {
        [one] => *one,
        [] => bail!("no trigger binding"),
        _ => bail!("several trigger bindings"),
    };
    let trigger = parse_trigger(name, trigger, &bindings, host, settings)?;
    let disabled_setting = settings
        .get(&format!("AzureWebJobs.{name}.Disabled"))
        .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    Ok(FunctionDef {
        name: name.to_string(),
        dir: dir.to_path_buf(),
        disabled: get_bool(&json, "disabled").unwrap_or(false) || disabled_setting,
        bindings,
        trigger,
    })
}

fn parse_trigger(
    function: &str,
    trigger: &Binding,
    bindings: &[Binding],
    host: &HostSettings,
    settings: &BTreeMap<String, String>,
) -> anyhow::Result<Trigger> {
    let raw = Value::Object(trigger.raw.clone());
    match trigger.kind.to_ascii_lowercase().as_str() {
        "httptrigger" => {
            let methods = match get_ci(&raw, "methods") {
                Some(Value::Array(_)) => Some(
                    string_list(get_ci(&raw, "methods"))
                        .into_iter()
                        .map(|m| m.to_ascii_uppercase())
                        .collect(),
                ),
                _ => None,
            };
            let route = get_str(&raw, "route")
                .filter(|r| !r.is_empty())
                .unwrap_or(function);
            let inputs: Vec<&Binding> = bindings
                .iter()
                .filter(|b| b.direction != Direction::Out)
                .collect();
            let outputs: Vec<&Binding> = bindings
                .iter()
                .filter(|b| b.direction != Direction::In)
                .collect();
            let http_in_and_out = inputs.len() == 1
                && outputs.len() == 1
                && outputs[0].kind.eq_ignore_ascii_case("http");
            let output = bindings
                .iter()
                .find(|b| b.direction != Direction::In && b.kind.eq_ignore_ascii_case("http"))
                .map(|b| b.name.clone());
            Ok(Trigger::Http(HttpTrigger {
                binding: trigger.name.clone(),
                methods,
                route: RouteTemplate::parse(&host.route_prefix, route)?,
                delivery: host.http_delivery(http_in_and_out),
                output,
            }))
        }
        "eventgridtrigger" => Ok(Trigger::EventGrid {
            binding: trigger.name.clone(),
        }),
        "timertrigger" => {
            let written =
                get_str(&raw, "schedule").ok_or_else(|| anyhow!("timerTrigger has no schedule"))?;
            let expression = resolve_setting_references(written, settings)?;
            Ok(Trigger::Timer {
                binding: trigger.name.clone(),
                schedule: Schedule::parse(&expression)?,
                run_on_startup: get_bool(&raw, "runOnStartup").unwrap_or(false),
            })
        }
        _ => Ok(Trigger::Other {
            kind: trigger.kind.clone(),
            binding: trigger.name.clone(),
        }),
    }
}

/// Replaces `%Name%` by the app setting `Name` (an unknown name is an error, as in the host).
fn resolve_setting_references(
    text: &str,
    settings: &BTreeMap<String, String>,
) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find('%') {
        let after = &rest[start + 1..];
        let end = after
            .find('%')
            .ok_or_else(|| anyhow!("unclosed % in {text:?}"))?;
        let key = &after[..end];
        let value = settings.get(key).ok_or_else(|| {
            anyhow!("{text:?} refers to the app setting {key:?}, which is not set")
        })?;
        out.push_str(&rest[..start]);
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    const HOST: &str = r#"{"version":"2.0","customHandler":{"description":{"defaultExecutablePath":"handler"},"enableForwardingHttpRequest":true}}"#;

    #[test]
    fn loads_functions_one_level_down_only() {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("host.json"), HOST);
        write(
            &dir.path().join("Open/function.json"),
            r#"{"bindings":[{"type":"httpTrigger","direction":"in","name":"req","methods":["post"],"route":"open/{id}"},{"type":"http","direction":"out","name":"res"}]}"#,
        );
        write(
            &dir.path().join("Mixed/function.json"),
            r#"{"bindings":[{"type":"httpTrigger","direction":"in","name":"req"},{"type":"http","direction":"out","name":"res"},{"type":"queue","direction":"out","name":"q"}]}"#,
        );
        write(
            &dir.path().join("Tick/function.json"),
            r#"{"bindings":[{"type":"timerTrigger","direction":"in","name":"timer","schedule":"%TickSchedule%"}]}"#,
        );
        write(
            &dir.path().join("nested/Deep/function.json"),
            r#"{"bindings":[{"type":"eventGridTrigger","direction":"in","name":"event"}]}"#,
        );
        write(&dir.path().join("Broken/function.json"), "{not json");
        let settings = BTreeMap::from([("TickSchedule".to_string(), "0 0 * * * *".to_string())]);
        let app = AppDefinition::load(dir.path(), &settings).unwrap();
        let names: Vec<&str> = app.functions.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["Mixed", "Open", "Tick"]);
        assert_eq!(app.errors.len(), 1);
        assert_eq!(app.host.route_prefix, "api");
        match &app.function("open").unwrap().trigger {
            Trigger::Http(http) => {
                assert_eq!(http.delivery, HttpDelivery::Forwarded);
                assert_eq!(http.methods.as_deref(), Some(&["POST".to_string()][..]));
                assert_eq!(http.route.text(), "api/open/{id}");
            }
            other => panic!("{other:?}"),
        }
        match &app.function("Mixed").unwrap().trigger {
            Trigger::Http(http) => {
                assert_eq!(http.delivery, HttpDelivery::Payload);
                assert_eq!(http.output.as_deref(), Some("res"));
            }
            other => panic!("{other:?}"),
        }
        match &app.function("Tick").unwrap().trigger {
            Trigger::Timer { schedule, .. } => assert_eq!(schedule.expression(), "0 0 * * * *"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn proxying_wins_over_forwarding_and_applies_to_http_in_and_out_only() {
        let dir = tempfile::tempdir().unwrap();
        write(
            &dir.path().join("Open/function.json"),
            r#"{"bindings":[{"type":"httpTrigger","direction":"in","name":"req"},{"type":"http","direction":"out","name":"res"}]}"#,
        );
        write(
            &dir.path().join("Mixed/function.json"),
            r#"{"bindings":[{"type":"httpTrigger","direction":"in","name":"req"},{"type":"http","direction":"out","name":"res"},{"type":"queue","direction":"out","name":"q"}]}"#,
        );
        let cases = [
            (
                r#""enableProxyingHttpRequest":true,"enableForwardingHttpRequest":true"#,
                HttpDelivery::Proxied,
            ),
            (
                r#""enableProxyingHttpRequest":"true""#,
                HttpDelivery::Proxied,
            ),
            (
                r#""enableProxyingHttpRequest":false,"enableForwardingHttpRequest":true"#,
                HttpDelivery::Forwarded,
            ),
            (
                r#""enableForwardingHttpRequest":false"#,
                HttpDelivery::Payload,
            ),
        ];
        for (flags, expected) in cases {
            write(
                &dir.path().join("host.json"),
                &format!(
                    r#"{{"version":"2.0","customHandler":{{"description":{{"defaultExecutablePath":"handler"}},{flags}}}}}"#
                ),
            );
            let app = AppDefinition::load(dir.path(), &BTreeMap::new()).unwrap();
            let delivery = |name: &str| match &app.function(name).unwrap().trigger {
                Trigger::Http(http) => http.delivery,
                other => panic!("{other:?}"),
            };
            assert_eq!(delivery("Open"), expected, "{flags}");
            assert_eq!(delivery("Mixed"), HttpDelivery::Payload, "{flags}");
        }
    }

    #[test]
    fn host_json_needs_a_custom_handler() {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("host.json"), r#"{"version":"2.0"}"#);
        let error = AppDefinition::load(dir.path(), &BTreeMap::new()).unwrap_err();
        assert!(format!("{error:#}").contains("customHandler"));
    }

    #[test]
    fn timespans() {
        assert_eq!(
            parse_timespan("00:05:00").unwrap(),
            Duration::from_secs(300)
        );
        assert_eq!(
            parse_timespan("1.02:00:00").unwrap(),
            Duration::from_secs(93_600)
        );
        assert!(parse_timespan("five minutes").is_err());
    }
}
