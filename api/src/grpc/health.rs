//! `grpc.health.v1.Health` (SPEC 4), served by tonic-health without a token. It follows
//! `/readyz`: SERVING while PostgreSQL answers, NOT_SERVING otherwise (a broker outage does
//! not count, mail waits in the outbox), for the whole server (`""`) and for `ZITADELUsers`.
//! A probe task keeps the statuses current, so `Watch` streams see every change; from the
//! shutdown signal on, everything is NOT_SERVING.

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
}

impl Readiness {
    /// NOT_SERVING until the first probe says otherwise.
    pub async fn new() -> Readiness {
        let readiness = Readiness {
            reporter: HealthReporter::new(),
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
    /// for good (a draining server takes no new work).
    pub async fn follow(self, pool: PgPool, stopping: impl Future<Output = ()>) {
        tokio::pin!(stopping);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(PROBE_INTERVAL) => self.probe(&pool).await,
                _ = &mut stopping => break,
            }
        }
        self.set(ServingStatus::NotServing).await;
    }

    async fn set(&self, status: ServingStatus) {
        for service in SERVICES {
            self.reporter.set_service_status(service, status).await;
        }
    }
}
