//! `grpc.health.v1.Health` (SPEC 4), served by tonic-health without a token. It follows
//! `/readyz`: SERVING while PostgreSQL answers, NOT_SERVING otherwise (a broker outage does
//! not count, mail waits in the outbox), for the whole server (`""`) and for `ZITADELUsers`.
//! A probe task keeps the statuses current, so `Watch` streams see every change; at the
//! shutdown signal, everything turns NOT_SERVING and the `Watch` streams end.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::db::PgPool;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

use super::proto::zitadel::resources::user::v3alpha::zitadel_users_server::ZitadelUsersServer;
use super::users::Users;

/// How often PostgreSQL is asked.
const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// How long one ask may take before the database counts as unreachable (as `/readyz`).
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The services whose status is reported: the whole server and the users service.
const SERVICES: [&str; 2] = ["", <ZitadelUsersServer<Users> as NamedService>::NAME];

/// The statuses served by the health service.
#[derive(Clone, Debug)]
pub struct Readiness {
    reporter: HealthReporter,
    /// The status last reported: `Watch` streams get a message per report, so only a
    /// change is reported.
    current: Arc<Mutex<Option<ServingStatus>>>,
}

impl Readiness {
    /// NOT_SERVING until the first probe says otherwise.
    pub async fn new() -> Readiness {
        let readiness = Readiness {
            reporter: HealthReporter::new(),
            current: Arc::default(),
        };
        readiness.set(ServingStatus::NotServing).await;
        readiness
    }

    /// The gRPC service answering from these statuses.
    pub fn server(&self) -> HealthServer<HealthService> {
        HealthServer::new(HealthService::from_health_reporter(self.reporter.clone()))
    }

    /// Asks PostgreSQL once, as `/readyz` does, and reports the answer.
    pub async fn probe(&self, pool: &PgPool) {
        let ready = common::db::ping(pool, PING_TIMEOUT).await;
        self.set(if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        })
        .await;
    }

    /// Probes every [`PROBE_INTERVAL`] until `stopping` completes, then reports NOT_SERVING
    /// (a draining server takes no new work) and ends every `Watch` stream: an open stream
    /// is a request in flight, and the graceful shutdown would wait for it forever.
    pub async fn follow(mut self, pool: PgPool, stopping: impl Future<Output = ()>) {
        tokio::pin!(stopping);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(PROBE_INTERVAL) => self.probe(&pool).await,
                _ = &mut stopping => break,
            }
        }
        self.set(ServingStatus::NotServing).await;
        // Dropping a status's sender ends its watchers' streams once they have seen the
        // last status.
        for service in SERVICES {
            self.reporter.clear_service_status(service).await;
        }
    }

    async fn set(&self, status: ServingStatus) {
        {
            let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
            if *current == Some(status) {
                return;
            }
            *current = Some(status);
        }
        for service in SERVICES {
            self.reporter.set_service_status(service, status).await;
        }
    }
}
