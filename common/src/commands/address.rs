//! The `user_emails` rows: a user's contact email and OTP Email authenticators, one table
//! (DESIGN "Data"). The commands decide; these functions only read and write the rows, so a
//! rule such as "a new address drops the pending code" is stated by the command that calls
//! them.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use crate::db::Prepared;
use crate::mail_job::Purpose;
use crate::schema::user_emails;

/// An address as the commands read it.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = user_emails)]
pub(crate) struct EmailRow {
    pub id: i64,
    pub address: String,
    pub verified: bool,
    pub code_hash: Option<Vec<u8>>,
    pub code_expires_at: Option<DateTime<Utc>>,
    pub code_failures: i32,
}

impl EmailRow {
    /// The hash of the code the address waits to be verified with, if it waits.
    pub fn pending_code_hash(&self) -> Option<&[u8]> {
        self.code_hash.as_deref().filter(|_| !self.verified)
    }

    pub fn has_pending_code(&self) -> bool {
        self.pending_code_hash().is_some()
    }
}

pub(super) fn find(conn: &mut PgConnection, id: i64) -> QueryResult<Option<EmailRow>> {
    user_emails::table
        .find(id)
        .select(EmailRow::as_select())
        .first(conn)
        .optional()
}

pub(super) fn contact_email(
    conn: &mut PgConnection,
    user_id: i64,
) -> QueryResult<Option<EmailRow>> {
    user_emails::table
        .filter(user_emails::user_id.eq(user_id))
        .filter(user_emails::purpose.eq(Purpose::ContactEmail))
        .select(EmailRow::as_select())
        .first(conn)
        .optional()
}

/// The OTP Email authenticators of a user.
#[diesel::dsl::auto_type]
fn otp_emails_of(user_id: i64) -> _ {
    let otp_email: Purpose = Purpose::OtpEmail;
    user_emails::table
        .filter(user_emails::user_id.eq(user_id))
        .filter(user_emails::purpose.eq(otp_email))
}

/// The OTP Email authenticator `id` of the user, if it is theirs.
pub(super) fn otp_email(
    conn: &mut PgConnection,
    user_id: i64,
    id: i64,
) -> QueryResult<Option<EmailRow>> {
    otp_emails_of(user_id)
        .filter(user_emails::id.eq(id))
        .select(EmailRow::as_select())
        .first(conn)
        .optional()
}

/// The user's OTP Email authenticators, oldest first: `(id, address, verified)`.
pub(super) fn otp_emails(
    conn: &mut PgConnection,
    user_id: i64,
) -> QueryResult<Vec<(i64, String, bool)>> {
    otp_emails_of(user_id)
        .select((user_emails::id, user_emails::address, user_emails::verified))
        .order((user_emails::created_at.asc(), user_emails::id.asc()))
        .load(conn)
}

pub(super) fn count_otp_emails(conn: &mut PgConnection, user_id: i64) -> QueryResult<i64> {
    otp_emails_of(user_id).count().get_result(conn)
}

/// Whether the user has an OTP Email authenticator for `address` (any case).
pub(super) fn has_otp_email(
    conn: &mut PgConnection,
    user_id: i64,
    address: &str,
) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        otp_emails_of(user_id).filter(
            diesel::dsl::sql::<diesel::sql_types::Bool>("lower(address) = lower(")
                .bind::<diesel::sql_types::Text, _>(address)
                .sql(")"),
        ),
    ))
    .get_result(conn)
}

pub(super) fn insert(
    conn: &mut PgConnection,
    user_id: i64,
    purpose: Purpose,
    address: &str,
    verified: bool,
    now: DateTime<Utc>,
) -> QueryResult<i64> {
    diesel::insert_into(user_emails::table)
        .values((
            user_emails::user_id.eq(user_id),
            user_emails::purpose.eq(purpose),
            user_emails::address.eq(address),
            user_emails::verified.eq(verified),
            user_emails::created_at.eq(now),
            user_emails::updated_at.eq(now),
        ))
        .returning(user_emails::id)
        .get_result(conn)
}

/// Sets the address (a new one, or the same) and whether it is verified; a pending code is
/// dropped and the wrong-code count starts again.
pub(super) fn set_address(
    conn: &mut PgConnection,
    id: i64,
    address: &str,
    verified: bool,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    use diesel::sql_types::{BigInt, Bool, Text, Timestamptz};
    Prepared::new(SET_ADDRESS_SQL)
        .bind::<Text, _>(address)
        .bind::<Bool, _>(verified)
        .bind::<Timestamptz, _>(now)
        .bind::<BigInt, _>(id)
        .execute(conn)?;
    Ok(())
}

/// [`set_address`]'s statement (`$1` address, `$2` verified, `$3` time, `$4` row id); a
/// statement each connection prepares once, as Diesel's UPDATEs are not.
pub const SET_ADDRESS_SQL: &str = "\
    UPDATE user_emails SET address = $1, verified = $2, code_hash = NULL, \
           code_expires_at = NULL, code_failures = 0, updated_at = $3 \
     WHERE id = $4";

/// The address was proven with its code: verified, the code dropped.
pub(super) fn mark_verified(
    conn: &mut PgConnection,
    row: &EmailRow,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    set_address(conn, row.id, &row.address, true, now)
}

/// A wrong code was submitted for the pending one.
pub(super) fn count_wrong_code(
    conn: &mut PgConnection,
    row: &EmailRow,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::update(user_emails::table.find(row.id))
        .set((
            user_emails::code_failures.eq(row.code_failures + 1),
            user_emails::updated_at.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

/// Makes `code_hash` the pending code (the previous one stops working) until `expires_at`;
/// the wrong-code count starts again.
pub(super) fn set_pending_code(
    conn: &mut PgConnection,
    id: i64,
    code_hash: Vec<u8>,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    use diesel::sql_types::{BigInt, Bytea, Timestamptz};
    Prepared::new(SET_PENDING_CODE_SQL)
        .bind::<Bytea, _>(code_hash)
        .bind::<Timestamptz, _>(expires_at)
        .bind::<Timestamptz, _>(now)
        .bind::<BigInt, _>(id)
        .execute(conn)?;
    Ok(())
}

/// [`set_pending_code`]'s statement (`$1` code hash, `$2` expiry, `$3` time, `$4` row id).
pub const SET_PENDING_CODE_SQL: &str = "\
    UPDATE user_emails SET code_hash = $1, code_expires_at = $2, code_failures = 0, \
           updated_at = $3 \
     WHERE id = $4";

pub(super) fn delete(conn: &mut PgConnection, id: i64) -> QueryResult<()> {
    diesel::delete(user_emails::table.find(id)).execute(conn)?;
    Ok(())
}

pub(super) fn delete_all_of_user(conn: &mut PgConnection, user_id: i64) -> QueryResult<()> {
    diesel::delete(user_emails::table.filter(user_emails::user_id.eq(user_id))).execute(conn)?;
    Ok(())
}
