//! The contracts on Azure Table storage (Azurite): the outbox of a `TableStore` with its outbox
//! on, the `TableSnapshotStore` and the `TableReadModelStore`. Another view is a new store on
//! the same account and table, with its own client, as another process would open.

use std::sync::Arc;
use std::time::Duration;

use streamfold::projection::SnapshotStore;
use streamfold::readmodel::{ReadModelStore, TableReadModelStore};
use streamfold::storage::{TableSnapshotStore, TableStore};

use crate::azurite;

mod outbox {
    use super::*;
    use crate::outbox::{Fixture, View};

    async fn table() -> Fixture {
        let (azurite, account) = azurite().await;
        let open = move || View::of(TableStore::new(account.clone()).with_outbox(true));
        Fixture {
            view: open(),
            reopen: Box::new(open),
            guard: Box::new(azurite),
        }
    }

    crate::outbox::suite!(table);
}

mod snapshots {
    use super::*;
    use crate::snapshots::Fixture;

    /// Table storage keeps times to 100 ns.
    const TABLE_TIME_RESOLUTION: Duration = Duration::from_nanos(100);

    async fn table() -> Fixture {
        let (azurite, account) = azurite().await;
        let open = move || -> Arc<dyn SnapshotStore> {
            Arc::new(TableSnapshotStore::new(account.clone()))
        };
        Fixture {
            store: open(),
            reopen: Box::new(open),
            time_resolution: TABLE_TIME_RESOLUTION,
            guard: Box::new(azurite),
        }
    }

    crate::snapshots::suite!(table);
}

mod readmodels {
    use super::*;
    use crate::readmodels::Fixture;

    async fn table() -> Fixture {
        let (azurite, account) = azurite().await;
        let open =
            move || -> Arc<dyn ReadModelStore> { Arc::new(TableReadModelStore::new(&account)) };
        Fixture {
            store: open(),
            reopen: Box::new(open),
            guard: Box::new(azurite),
        }
    }

    crate::readmodels::suite!(table);
}
