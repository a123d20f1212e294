//! The test's own RabbitMQ vhost (named like its database), made and removed with
//! `rabbitmqctl`, so parallel tests never see each other's queues.

use std::process::{Command, Stdio};

use super::TestEnv;

impl TestEnv {
    /// Creates the vhost `name` and lets `guest` (the processes' user) use all of it.
    pub(super) fn create_vhost(&self) {
        rabbitmqctl(&["add_vhost", &self.name]).expect("create the RabbitMQ vhost");
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            &self.name,
            "guest",
            ".*",
            ".*",
            ".*",
        ])
        .expect("grant guest access to the RabbitMQ vhost");
    }
}

/// Removes the vhost `name` and everything in it; errors are ignored (called on drop).
pub(super) fn delete_vhost(name: &str) {
    let _ = rabbitmqctl(&["delete_vhost", name]);
}

/// Runs `rabbitmqctl ARGS...`; `Err` carries its output when it fails.
fn rabbitmqctl(args: &[&str]) -> Result<(), String> {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run rabbitmqctl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "rabbitmqctl {args:?} failed with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
