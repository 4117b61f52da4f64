//! What an error of the azure crates means for streamfold: [`map_error`] turns it into a
//! [`StoreError`] the same way for every backend (input refused, misconfigured, unavailable and
//! whether a write may have been applied, corrupt answer). Descriptions never include a URL
//! (which may carry a SAS).

use azure_core::error::ErrorKind;
use azure_core::StatusCode;

use super::delivery::DeliveryTracker;
use super::identity_credential::identity_failure;
use super::transport_failure::{describe_error, is_timeout_error};
use crate::stream::StoreError;

/// The HTTP status of an error answer.
pub(crate) fn status_of(error: &azure_core::Error) -> Option<StatusCode> {
    match error.kind() {
        ErrorKind::HttpResponse { status, .. } => Some(*status),
        _ => None,
    }
}

/// The service's error code of an error answer.
pub(crate) fn error_code(error: &azure_core::Error) -> Option<&str> {
    match error.kind() {
        ErrorKind::HttpResponse { error_code, .. } => error_code.as_deref(),
        _ => None,
    }
}

/// Error codes with which Table and Blob storage refuse a value a request carried (as opposed
/// to a malformed request, which is our fault): the values come from callers (times, keys,
/// event data, ranges), so these are client errors. Every other 4xx is ours and stays a 500.
pub const INPUT_ERROR_CODES: [&str; 14] = [
    "OutOfRangeInput",
    "InvalidInput",
    "InvalidValueType",
    "PropertyValueTooLarge",
    "PropertyNameTooLong",
    "TooManyProperties",
    "EntityTooLarge",
    "KeyValueTooLarge",
    "InvalidDuplicateRow",
    "RequestBodyTooLarge",
    "OutOfRangeQueryParameterValue",
    "InvalidQueryParameterValue",
    "InvalidRange",
    "MetadataTooLarge",
];

/// Classifies an error of the azure crates, for every backend. `what` names the stream,
/// table or container for the message; `write` is the tracker of a write, whose failure may
/// leave it applied; `gone` is the service's error code for "the table / container itself does
/// not exist" and `parent` what to call it in the message.
pub(crate) fn map_error(
    error: &azure_core::Error,
    what: &str,
    write: Option<&DeliveryTracker>,
    gone: &str,
    parent: &str,
) -> StoreError {
    let maybe_applied = write.is_some_and(DeliveryTracker::may_have_reached_storage);
    match error.kind() {
        ErrorKind::HttpResponse { status, error_code } => {
            let code = error_code.as_deref().unwrap_or("no error code");
            let status_number = u16::from(*status);
            match status_number {
                401 | 403 => StoreError::Misconfigured(format!(
                    "storage refused access to {what} (HTTP {status_number}, {code}): check the \
                     account key or SAS, or the managed identity's role assignments"
                )),
                404 if code == gone => StoreError::Misconfigured(format!(
                    "the {parent} of {what} does not exist (was it deleted?)"
                )),
                400 | 413 | 416 if INPUT_ERROR_CODES.contains(&code) => StoreError::InputRefused {
                    target: what.to_owned(),
                    status: status_number,
                    code: code.to_owned(),
                },
                408 | 429 | 500..=599 => StoreError::Unavailable {
                    message: format!("storage answered HTTP {status_number} ({code}) for {what}"),
                    maybe_applied,
                },
                _ => StoreError::Misconfigured(format!(
                    "storage refused a request for {what}: HTTP {status_number} ({code})"
                )),
            }
        }
        ErrorKind::DataConversion => StoreError::Corrupt {
            stream: what.to_owned(),
            detail: format!(
                "storage sent an answer that could not be read: {}",
                describe_error(error)
            ),
        },
        // No token from the managed identity: nothing was sent; storage cannot be reached
        // until the identity endpoint answers again (it logged why).
        ErrorKind::Credential => match identity_failure(error) {
            Some(why) => StoreError::Unavailable {
                message: format!("no managed identity token to reach storage for {what}: {why}"),
                maybe_applied,
            },
            None => {
                StoreError::Misconfigured(format!("storage credentials are unusable for {what}"))
            }
        },
        ErrorKind::Io | ErrorKind::Other | ErrorKind::MockFramework => StoreError::Unavailable {
            message: if is_timeout_error(error) {
                format!("storage did not answer in time for {what}")
            } else {
                format!(
                    "storage could not be reached for {what}: {}",
                    describe_error(error)
                )
            },
            maybe_applied,
        },
    }
}
