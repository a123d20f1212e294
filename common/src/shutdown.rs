//! When a process stops: on SIGTERM or SIGINT for the binaries, or when a test pulls its
//! [`Trigger`]. Both processes take a [`Shutdown`] in `run_until` and start their drain when
//! it completes, so the graceful stop is one path whoever asks for it.

use tokio::sync::watch;

/// A stop request to wait for. Clones wait for the same request.
#[derive(Debug, Clone)]
pub struct Shutdown {
    requested: watch::Receiver<bool>,
}

/// Asks the [`Shutdown`]s made with it to stop. Dropping it asks too: an application whose
/// test is gone has nobody to serve.
#[derive(Debug)]
pub struct Trigger {
    request: watch::Sender<bool>,
}

impl Shutdown {
    /// Completes on the first SIGTERM or SIGINT. Call it inside the tokio runtime: the
    /// signal handlers are installed by a task it spawns.
    pub fn on_signal() -> Self {
        let (trigger, shutdown) = Self::triggered_by_hand();
        tokio::spawn(async move {
            signal().await;
            tracing::info!("shutdown requested");
            trigger.pull();
        });
        shutdown
    }

    /// A shutdown that completes when the returned [`Trigger`] is pulled or dropped.
    pub fn triggered_by_hand() -> (Trigger, Self) {
        let (request, requested) = watch::channel(false);
        (Trigger { request }, Shutdown { requested })
    }

    /// Waits until the stop is requested (at once when it already was).
    pub async fn requested(mut self) {
        // An error means the trigger is gone, which asks for the stop too.
        let _ = self.requested.wait_for(|stop| *stop).await;
    }
}

impl Trigger {
    /// Requests the stop.
    pub fn pull(&self) {
        self.request.send_replace(true);
    }
}

/// SIGTERM (what orchestrators send) or SIGINT (Ctrl-C).
async fn signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_pulled_or_dropped_trigger_completes_every_clone() {
        let (trigger, shutdown) = Shutdown::triggered_by_hand();
        let other = shutdown.clone();
        let waiting = tokio::spawn(other.requested());
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiting.is_finished());
        trigger.pull();
        waiting.await.unwrap();
        shutdown.clone().requested().await;

        let (trigger, shutdown) = Shutdown::triggered_by_hand();
        drop(trigger);
        shutdown.requested().await;
    }
}
