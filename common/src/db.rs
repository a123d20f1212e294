//! PostgreSQL access: creating the database when missing, embedded migrations, the connection
//! pool, and running Diesel (synchronous) off the async runtime.
//!
//! Diesel runs on tokio's blocking pool with an r2d2 pool of connections (DESIGN decision 7):
//! one choice for the whole project, so no query blocks a runtime thread.

use std::time::Duration;

use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool, PooledConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::error::Error;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");

pub type PgPool = Pool<ConnectionManager<PgConnection>>;
pub type PgConn = PooledConnection<ConnectionManager<PgConnection>>;

/// How long a request waits for a free connection before it is answered 503.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);

/// Arbitrary constant for the advisory lock that serializes migrations between replicas.
const MIGRATION_LOCK: i64 = 0x0063_6f6e_7461_6374;

/// Creates the database named in `url` if it does not exist yet (connecting to the server's
/// `postgres` database to do so). Safe when several processes race to create it.
pub fn ensure_database(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("DATABASE_URL is not a URL: {e}"))?;
    let name = parsed.path().trim_start_matches('/').to_owned();
    if name.is_empty() {
        return Err("DATABASE_URL names no database".into());
    }
    let name = percent_encoding::percent_decode_str(&name)
        .decode_utf8_lossy()
        .into_owned();
    let mut admin_url = parsed.clone();
    admin_url.set_path("/postgres");
    let mut admin = match PgConnection::establish(admin_url.as_str()) {
        Ok(c) => c,
        // No maintenance database we can reach: let the real connection report the problem.
        Err(_) => return Ok(()),
    };
    if database_exists(&mut admin, &name)? {
        return Ok(());
    }
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    match diesel::sql_query(format!("CREATE DATABASE {quoted}")).execute(&mut admin) {
        Ok(_) => {
            tracing::info!(database = %name, "created database");
            Ok(())
        }
        // Another process (a replica, `api bootstrap`, the worker) may have created it at the
        // same moment; PostgreSQL then reports a duplicate in one of several ways.
        Err(_) if database_exists(&mut admin, &name)? => Ok(()),
        Err(e) => Err(format!("cannot create database {name}: {e}")),
    }
}

fn database_exists(admin: &mut PgConnection, name: &str) -> Result<bool, String> {
    #[derive(QueryableByName)]
    struct Exists {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        exists: bool,
    }
    diesel::sql_query("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS exists")
        .bind::<diesel::sql_types::Text, _>(name)
        .get_result::<Exists>(admin)
        .map(|e| e.exists)
        .map_err(|e| format!("cannot query the database list: {e}"))
}

/// Applies pending migrations; replicas starting together take turns.
pub fn run_migrations(conn: &mut PgConnection) -> Result<usize, String> {
    diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
        .execute(conn)
        .map_err(|e| format!("cannot take the migration lock: {e}"))?;
    let result = conn
        .run_pending_migrations(MIGRATIONS)
        .map(|applied| applied.len())
        .map_err(|e| format!("migration failed: {e}"));
    let _ = diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})")).execute(conn);
    result
}

/// Creates the database if needed and applies migrations (`api migrate`, `api serve`).
pub fn prepare(url: &str) -> Result<usize, String> {
    ensure_database(url)?;
    let mut conn =
        PgConnection::establish(url).map_err(|e| format!("cannot connect to PostgreSQL: {e}"))?;
    run_migrations(&mut conn)
}

/// A pool that connects lazily, so a process starts (and reports unready) while PostgreSQL
/// is down.
pub fn pool(url: &str, size: u32) -> PgPool {
    Pool::builder()
        .max_size(size)
        .min_idle(Some(0))
        .connection_timeout(CHECKOUT_TIMEOUT)
        .test_on_check_out(false)
        .build_unchecked(ConnectionManager::new(url))
}

/// Runs `f` with a pooled connection on the blocking pool.
pub async fn run<T, F>(pool: &PgPool, f: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce(&mut PgConnection) -> Result<T, Error> + Send + 'static,
{
    let pool = pool.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = pool
            .get()
            .map_err(|e| Error::DatabaseUnavailable(e.to_string()))?;
        match f(&mut conn) {
            // The statement failed because PostgreSQL went away (a restart, a failover): the
            // caller sees "unavailable" (503, retry), whichever statement noticed first.
            Err(Error::Database(e)) if connection_lost(&mut conn) => {
                Err(Error::DatabaseUnavailable(e.to_string()))
            }
            other => other,
        }
    })
    .await
    .map_err(|e| Error::Internal(format!("database task failed: {e}")))?
}

/// `SELECT 1` within `timeout`: the readiness probe.
/// After a failed statement: whether the connection itself is gone (broken, or it cannot
/// answer `SELECT 1`), rather than the statement being refused.
fn connection_lost(conn: &mut PgConn) -> bool {
    use diesel::r2d2::R2D2Connection;
    let conn: &mut PgConnection = conn;
    conn.is_broken() || conn.ping().is_err()
}

pub async fn ping(pool: &PgPool, timeout: Duration) -> bool {
    let pool = pool.clone();
    let probe = tokio::task::spawn_blocking(move || {
        let mut conn = pool.get_timeout(timeout).ok()?;
        diesel::sql_query("SELECT 1").execute(&mut conn).ok()
    });
    matches!(tokio::time::timeout(timeout, probe).await, Ok(Ok(Some(_))))
}

/// A new id from the database's id generator (`next_id()`, see the first migration).
pub fn next_id(conn: &mut PgConnection) -> QueryResult<i64> {
    diesel::select(next_id_sql()).get_result(conn)
}

diesel::define_sql_function! {
    #[sql_name = "next_id"]
    fn next_id_sql() -> diesel::sql_types::Int8;
}

/// A hand-written statement (a CTE that Diesel's query builder cannot express) that each
/// connection prepares once and then only executes.
///
/// Diesel's `sql_query` never caches its statements, so PostgreSQL would parse, analyse and
/// plan them on every run; the request's and the delivery's CTEs are the statements where
/// that shows (the benchmark's perf profile and statement log). Diesel caches a statement by
/// its SQL text when the query says it is safe to, which this type does. `$n` in the text
/// names the n-th value given to [`Prepared::bind`]; a value named twice is sent twice. The
/// text must not hold a `$` otherwise (no dollar quoting, no `$` in literals).
pub struct Prepared<'a> {
    sql: &'static str,
    binds: Vec<Box<dyn PgBind + 'a>>,
}

impl<'a> Prepared<'a> {
    pub fn new(sql: &'static str) -> Self {
        Prepared {
            sql,
            binds: Vec::new(),
        }
    }

    /// The next value (`$1`, `$2`, ... in the order of the calls), of SQL type `ST`.
    pub fn bind<ST, V>(mut self, value: V) -> Self
    where
        ST: 'a,
        diesel::pg::Pg: diesel::sql_types::HasSqlType<ST>,
        V: diesel::serialize::ToSql<ST, diesel::pg::Pg> + 'a,
    {
        self.binds.push(Box::new(Typed::<ST, V> {
            value,
            sql_type: std::marker::PhantomData,
        }));
        self
    }
}

/// One value of a [`Prepared`] statement.
trait PgBind {
    fn push<'b>(
        &'b self,
        out: &mut diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> QueryResult<()>;
}

struct Typed<ST, V> {
    value: V,
    sql_type: std::marker::PhantomData<fn() -> ST>,
}

impl<ST, V> PgBind for Typed<ST, V>
where
    diesel::pg::Pg: diesel::sql_types::HasSqlType<ST>,
    V: diesel::serialize::ToSql<ST, diesel::pg::Pg>,
{
    fn push<'b>(
        &'b self,
        out: &mut diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> QueryResult<()> {
        out.push_bind_param::<ST, V>(&self.value)
    }
}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for Prepared<'_> {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> QueryResult<()> {
        // Diesel numbers the values it is given in order, so each `$n` of the text becomes
        // the next placeholder with the n-th value.
        let mut rest = self.sql;
        while let Some(at) = rest.find('$') {
            let digits = rest[at + 1..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            let n: usize = rest[at + 1..at + 1 + digits].parse().map_err(|_| {
                diesel::result::Error::QueryBuilderError(
                    format!("a `$` without a number in {:?}", self.sql).into(),
                )
            })?;
            out.push_sql(&rest[..at]);
            let bind = n
                .checked_sub(1)
                .and_then(|i| self.binds.get(i))
                .ok_or_else(|| {
                    diesel::result::Error::QueryBuilderError(
                        format!("${n} has no value in {:?}", self.sql).into(),
                    )
                })?;
            bind.push(&mut out)?;
            rest = &rest[at + 1 + digits..];
        }
        out.push_sql(rest);
        Ok(())
    }
}

impl diesel::query_builder::QueryId for Prepared<'_> {
    type QueryId = ();
    // Not one type per statement: Diesel keys the cache by the SQL text instead.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::query_builder::Query for Prepared<'_> {
    type SqlType = diesel::sql_types::Untyped;
}

impl<Conn> RunQueryDsl<Conn> for Prepared<'_> {}

#[cfg(test)]
mod tests {
    use super::Prepared;
    use diesel::pg::{Pg, PgQueryBuilder};
    use diesel::query_builder::QueryFragment;
    use diesel::sql_types::{BigInt, Text};

    #[test]
    fn prepared_statements_number_each_use_of_a_value_and_are_cacheable() {
        let query = Prepared::new("UPDATE t SET a = $2, b = $1 WHERE id = $1::bigint")
            .bind::<BigInt, _>(7_i64)
            .bind::<Text, _>("x");
        let shown = diesel::debug_query::<Pg, _>(&query).to_string();
        assert!(
            shown.starts_with("UPDATE t SET a = $1, b = $2 WHERE id = $3::bigint"),
            "{shown}"
        );
        assert!(shown.contains("[\"x\", 7, 7]"), "{shown}");
        assert!(query.is_safe_to_cache_prepared(&Pg).unwrap());

        let unknown = Prepared::new("SELECT $2").bind::<BigInt, _>(1_i64);
        let err = unknown
            .to_sql(&mut PgQueryBuilder::default(), &Pg)
            .unwrap_err();
        assert!(err.to_string().contains("$2 has no value"), "{err}");
    }
}
