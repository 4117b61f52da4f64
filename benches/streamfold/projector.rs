//! Section 6, the Projector: notifications applied per second and the lag from an append to
//! the read model's update.
//!
//! Not measured yet: it needs the app to publish notifications (the outbox and publisher) and
//! the Projector function to apply them to read models, end to end through the Event Grid
//! topic simulator. Until both are wired into the handler, the rows say "pending" instead of
//! showing a number.

use crate::report::Row;

const SECTION: &str = "projector";
const PENDING: &str = "pending: the Projector and the notification outbox are being built (issue \
                       'Notifications'); this section will drive them through the Event Grid \
                       topic simulator once the handler publishes notifications";

pub async fn run() -> anyhow::Result<Vec<Row>> {
    Ok(vec![
        Row::not_available(
            "projector.rate",
            SECTION,
            "Projector: notifications applied per second",
            "notif/s",
            PENDING,
        ),
        Row::not_available(
            "projector.lag.p50",
            SECTION,
            "Projector: lag from append to read-model update, p50",
            "ms",
            PENDING,
        ),
    ])
}
