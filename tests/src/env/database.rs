//! The test's own PostgreSQL database (the processes create and migrate it on start):
//! `psql` for white-box checks and fault injection, and dropping it when the test ends.

use std::process::{Command, Stdio};

use super::TestEnv;

impl TestEnv {
    /// Runs a SQL statement on this test's database with `psql` and returns its unaligned,
    /// tuples-only output (`psql -At`). For white-box checks and fault injection only; a test
    /// that can observe the same thing from outside should.
    pub async fn psql(&self, sql: &str) -> String {
        let out = tokio::process::Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", &self.name])
            .args(["-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
            .env("PGCONNECT_TIMEOUT", "5")
            .output()
            .await
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql failed on {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Drops the database `name`, disconnecting its sessions; errors are ignored (called on drop).
pub(super) fn drop_database(name: &str) {
    let _ = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-q"])
        .arg("-c")
        .arg(format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", name))
        .env("PGCONNECT_TIMEOUT", "5")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
