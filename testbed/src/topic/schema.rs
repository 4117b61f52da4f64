//! The validation of each published event against the topic's schema, as strict as Event
//! Grid: EventGridEvent (`id`, `subject`, `eventType`, `eventTime` (RFC 3339), `data`,
//! `dataVersion` required, `topic` omitted or equal to the topic's resource id — so an explicit
//! `"topic": null` is refused —, `metadataVersion` omitted or `"1"`) or CloudEvents 1.0
//! (`specversion` `"1.0"`, non-empty `id`, `source`, `type`, an RFC 3339 `time` when present,
//! string `subject`/`datacontenttype`/`dataschema`, not both `data` and `data_base64`, attribute
//! names of lower-case letters and digits). Each check answers why an event is refused.

use serde_json::{Map, Value};

use super::METADATA_VERSION;

/// The CloudEvents version accepted.
pub const CLOUDEVENTS_SPEC_VERSION: &str = "1.0";

/// A non-empty string field.
fn required_string<'a>(event: &'a Map<String, Value>, field: &str) -> Result<&'a str, String> {
    match event.get(field) {
        None => Err(format!("{field} is required")),
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) => Err(format!("{field} must not be empty")),
        Some(_) => Err(format!("{field} must be a string")),
    }
}

pub(super) fn check_event_grid_event(event: &Value, topic: &str) -> Result<(), String> {
    let Value::Object(event) = event else {
        return Err("an event must be a JSON object".into());
    };
    for field in ["id", "subject", "eventType"] {
        required_string(event, field)?;
    }
    let time = required_string(event, "eventTime")?;
    if !is_rfc3339(time) {
        return Err(format!("eventTime {time:?} is not an RFC 3339 date-time"));
    }
    if !event.contains_key("data") {
        return Err("data is required".into());
    }
    match event.get("dataVersion") {
        Some(Value::String(_)) => {}
        None => return Err("dataVersion is required".into()),
        Some(_) => return Err("dataVersion must be a string".into()),
    }
    match event.get("topic") {
        None => {}
        Some(Value::String(t)) if t.eq_ignore_ascii_case(topic) => {}
        Some(other) => {
            return Err(format!(
                "topic must be omitted or equal to {topic:?}, not {other}"
            ))
        }
    }
    match event.get("metadataVersion") {
        None => {}
        Some(Value::String(v)) if v == METADATA_VERSION => {}
        Some(other) => {
            return Err(format!(
                "metadataVersion must be omitted or \"1\", not {other}"
            ))
        }
    }
    Ok(())
}

pub(super) fn check_cloud_event(event: &Value) -> Result<(), String> {
    let Value::Object(event) = event else {
        return Err("an event must be a JSON object".into());
    };
    match event.get("specversion") {
        Some(Value::String(v)) if v == CLOUDEVENTS_SPEC_VERSION => {}
        None => return Err("specversion is required".into()),
        Some(other) => return Err(format!("specversion must be \"1.0\", not {other}")),
    }
    for field in ["id", "source", "type"] {
        required_string(event, field)?;
    }
    if let Some(time) = event.get("time") {
        match time {
            Value::String(t) if is_rfc3339(t) => {}
            other => return Err(format!("time {other} is not an RFC 3339 date-time")),
        }
    }
    for field in ["subject", "datacontenttype", "dataschema"] {
        if let Some(value) = event.get(field) {
            if !value.is_string() {
                return Err(format!("{field} must be a string"));
            }
        }
    }
    if event.contains_key("data") && event.contains_key("data_base64") {
        return Err("data and data_base64 must not both be present".into());
    }
    if let Some(name) = event.keys().find(|k| {
        *k != "data_base64"
            && (k.is_empty()
                || !k
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
    }) {
        return Err(format!(
            "attribute name {name:?} must be lower-case letters and digits"
        ));
    }
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, with field ranges checked.
fn is_rfc3339(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(range)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        part.iter()
            .try_fold(0u32, |n, d| Some(n * 10 + u32::from(d - b'0')))
    };
    let fields = (|| {
        let date_ok = b.get(4) == Some(&b'-') && b.get(7) == Some(&b'-');
        let t_ok = matches!(b.get(10), Some(b'T' | b't' | b' '));
        let time_ok = b.get(13) == Some(&b':') && b.get(16) == Some(&b':');
        if !(date_ok && t_ok && time_ok) {
            return None;
        }
        let (month, day) = (digits(5..7)?, digits(8..10)?);
        let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
        digits(0..4)?;
        let ranges_ok = (1..=12).contains(&month)
            && (1..=31).contains(&day)
            && hour <= 23
            && minute <= 59
            && second <= 60;
        ranges_ok.then_some(())
    })();
    if fields.is_none() {
        return false;
    }
    let mut rest = &b[19..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let n = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        rest = &fraction[n..];
    }
    match rest {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit())
                && (h1 - b'0') * 10 + (h2 - b'0') <= 23
                && (m1 - b'0') * 10 + (m2 - b'0') <= 59
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        for ok in [
            "2024-05-01T10:00:00Z",
            "2024-05-01T10:00:00.123456789Z",
            "2024-05-01t10:00:00+02:00",
            "2024-12-31T23:59:60-11:30",
        ] {
            assert!(is_rfc3339(ok), "{ok}");
        }
        for bad in [
            "",
            "2024-05-01",
            "2024-05-01T10:00:00",
            "2024-13-01T10:00:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T10:00:00.Z",
            "2024-05-01T10:00:00+0200",
            "2024-05-01T10:00Z",
            "yesterday",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }
}
