//! SQL from plugins: `db_execute` / `db_query` with JSON parameters and JSON rows.
//!
//! A plugin sends SQL text and a list of JSON parameters; the host binds every parameter
//! as a real bound value (never pasted into the SQL) and returns rows as JSON objects.
//! [`DynamicSql`] does this on the three connection types the host pools: diesel's
//! [`SqliteConnection`] and diesel-async's PostgreSQL and MySQL connections behind
//! [`AsyncConnectionWrapper`]. The binding code and the row loop are written once
//! (`load_rows`, `bind_json`); each back-end adds only how it binds a NULL and how it
//! reads a raw value.
//!
//! # Parameters
//!
//! Placeholders are the back-end's own: `$1, $2, ...` on PostgreSQL, `?` on SQLite and
//! MySQL; the SQL is never rewritten. Each JSON parameter is bound as:
//!
//! | JSON                     | SQL type                                                    |
//! |--------------------------|-------------------------------------------------------------|
//! | `null`                   | NULL (SQLite, MySQL: a NULL text; PostgreSQL: see below)    |
//! | `true` / `false`         | boolean                                                     |
//! | integer (fits `i64`)     | 64-bit integer; an integer above `i64::MAX` is an error     |
//! | other number             | double precision                                            |
//! | string                   | text                                                        |
//! | array / object           | text holding the JSON (cast it: `$1::jsonb`, `CAST(? AS JSON)`) |
//!
//! PostgreSQL types parameters strictly, so a text parameter needs a cast where another
//! type is wanted (`$1::date`, `$1::uuid`, `$1::jsonb`). A JSON `null` goes to PostgreSQL
//! with no declared type, so the server infers it from its use: `INSERT ... VALUES ($1)`
//! takes a NULL for a column of any type (a NULL typed as text would be refused there).
//! Where the first use does not determine the type (`$1 IS NULL OR n = $1`), PostgreSQL
//! reports "could not determine data type of parameter $1": cast it, `$1::int IS NULL`.
//!
//! # Values
//!
//! SQL NULL is JSON `null`. Numbers that JSON cannot hold exactly as numbers are strings:
//! PostgreSQL `numeric` and MySQL `DECIMAL` (exact decimal text), and NaN / infinities
//! (`"NaN"`, `"Infinity"`, `"-Infinity"`). Binary data is a string `"\x<hex>"`, like
//! PostgreSQL's own text form of `bytea` (`"\x00ff"`). Dates are ISO-8601: `2024-02-29`,
//! `2024-02-29T13:05:09.25` (fractional seconds only when non-zero), PostgreSQL's
//! `timestamptz` in UTC with a `Z`. Per back-end:
//!
//! - SQLite, by storage class: INTEGER and REAL are numbers, TEXT a string, BLOB `"\x<hex>"`.
//! - PostgreSQL, by type: `bool`; `int2/int4/int8/oid`, `float4/float8` numbers;
//!   `numeric` a string; `text/varchar/bpchar/name/char/xml` strings; `json/jsonb` the JSON
//!   value itself; `bytea` `"\x<hex>"`; `uuid` its usual string; `date`, `time`, `timetz`,
//!   `timestamp`, `timestamptz` ISO-8601 (`infinity` / `-infinity` as such). Other types
//!   whose value is plain text (enums, `citext`, ...) are strings; anything else (arrays,
//!   `interval`, ...) is a [`SqlError::Decode`] asking for a cast to text.
//! - MySQL / MariaDB, by type: integers (signed or unsigned), `FLOAT`, `DOUBLE`, `BIT`,
//!   `YEAR` numbers; `DECIMAL` a string; `CHAR/VARCHAR/TEXT/ENUM/SET/JSON` strings; binary
//!   strings and BLOBs a string when they hold UTF-8, else `"\x<hex>"`; `DATE`, `DATETIME`,
//!   `TIMESTAMP`, `TIME` ISO-8601 (a `TIME` may exceed 24 hours; a negative one is a
//!   [`SqlError::Decode`] asking for `CAST(... AS CHAR)`).
//!
//! A row is a [`Map`] keyed by column name; a name that appears twice in one result is a
//! [`SqlError::Decode`] (give the columns distinct names with `AS`), so nothing is
//! silently dropped. The keys follow `serde_json`'s `Map` order: column order when the
//! build enables serde_json's `preserve_order` feature, alphabetical otherwise.
//!
//! # Read-only queries
//!
//! [`DynamicSql::query_json`] with `read_only` runs the statement so that a write fails with
//! [`SqlError::ReadOnly`]: on PostgreSQL inside a transaction made `READ ONLY`, on MySQL in
//! a transaction started after `SET TRANSACTION READ ONLY` (MySQL does not allow changing
//! it once a transaction runs), on SQLite under `PRAGMA query_only = ON`, set back to its
//! previous value afterwards, also on error.

use std::fmt::Display;
use std::panic::{catch_unwind, AssertUnwindSafe};

use diesel::backend::{Backend, DieselReserveSpecialization};
use diesel::connection::{LoadConnection, SimpleConnection, TransactionManager};
use diesel::deserialize::FromSql;
use diesel::mysql::data_types::MysqlTime;
use diesel::mysql::{Mysql, MysqlType, MysqlValue};
use diesel::pg::{Pg, PgTypeMetadata, PgValue};
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::row::{Field, Row};
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::{
    BigInt, Bool, Date, Datetime, Double, Float, HasSqlType, Nullable, Text, Time, TypeMetadata, Unsigned,
};
use diesel::sqlite::{Sqlite, SqliteType, SqliteValue};
use diesel::{Connection, RunQueryDsl, SqliteConnection};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::{AsyncMysqlConnection, AsyncPgConnection};
use serde_json::{Map, Number, Value};

/// An SQL problem for the plugin: what went wrong, in words a plugin author can act on.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// A parameter cannot be bound (`index` counts from 1, like the placeholders).
    #[error("parameter {index}: {reason}")]
    Param {
        /// The parameter's position, from 1.
        index: usize,
        /// Why it cannot be bound.
        reason: String,
    },
    /// The database refused the statement; its own message (with PostgreSQL's detail and
    /// hint when it gives them).
    #[error("{0}")]
    Database(String),
    /// The query returned more rows than the caller allows.
    #[error("the query returned more than {0} rows; add a LIMIT")]
    TooManyRows(usize),
    /// A value of the result cannot be turned into JSON.
    #[error("column '{column}': {reason}")]
    Decode {
        /// The column's name.
        column: String,
        /// What is wrong and what to do about it.
        reason: String,
    },
    /// A write was attempted under read-only access; the database's message.
    #[error("read-only access: {0}")]
    ReadOnly(String),
}

impl From<DieselError> for SqlError {
    /// The database's message, as [`SqlError::ReadOnly`] when it refused a write for being
    /// read-only (PostgreSQL SQLSTATE 25006, MySQL error 1792, SQLite `SQLITE_READONLY`).
    fn from(error: DieselError) -> Self {
        if let DieselError::DatabaseError(kind, info) = &error {
            let message = info.message();
            if matches!(kind, DatabaseErrorKind::ReadOnlyTransaction) || is_read_only_message(message) {
                return SqlError::ReadOnly(message.to_owned());
            }
            let mut text = message.to_owned();
            if let Some(detail) = info.details() {
                text.push_str(&format!(" (detail: {detail})"));
            }
            if let Some(hint) = info.hint() {
                text.push_str(&format!(" (hint: {hint})"));
            }
            return SqlError::Database(text);
        }
        SqlError::Database(error.to_string())
    }
}

/// Whether a database message reports a write refused for read-only access, for drivers
/// that do not classify it (SQLite) or in case one stops doing so.
fn is_read_only_message(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    lower.contains("attempt to write a readonly database")
        || lower.contains("in a read-only transaction")
        || lower.contains("in a read only transaction")
}

/// Runs plugin SQL with JSON parameters (see the [module documentation](self)).
pub trait DynamicSql {
    /// Runs a statement; returns the number of rows affected.
    fn execute_json(&mut self, sql: &str, params: &[Value]) -> Result<usize, SqlError>;

    /// Runs a query; every row becomes a JSON object keyed by column name.
    ///
    /// More than `max_rows` rows is [`SqlError::TooManyRows`]. With `read_only`, the query
    /// runs so that any write fails with [`SqlError::ReadOnly`] (see the module
    /// documentation for how on each back-end).
    fn query_json(
        &mut self,
        sql: &str,
        params: &[Value],
        max_rows: usize,
        read_only: bool,
    ) -> Result<Vec<Map<String, Value>>, SqlError>;
}

impl DynamicSql for SqliteConnection {
    fn execute_json(&mut self, sql: &str, params: &[Value]) -> Result<usize, SqlError> {
        execute_rows(self, sql, params)
    }

    fn query_json(
        &mut self,
        sql: &str,
        params: &[Value],
        max_rows: usize,
        read_only: bool,
    ) -> Result<Vec<Map<String, Value>>, SqlError> {
        // The pragmas are the host's statements (a plugin may not set one: see
        // db::sqlite_guard); the query itself is the plugin's.
        if !read_only || crate::sqlite_guard::as_host(|| sqlite_query_only(self))? {
            return load_rows(self, sql, params, max_rows);
        }
        crate::sqlite_guard::as_host(|| self.batch_execute("PRAGMA query_only = ON"))?;
        let rows = load_rows(self, sql, params, max_rows);
        let restored = crate::sqlite_guard::as_host(|| self.batch_execute("PRAGMA query_only = OFF"));
        let rows = rows?;
        restored?;
        Ok(rows)
    }
}

/// Whether `PRAGMA query_only` is on.
fn sqlite_query_only(conn: &mut SqliteConnection) -> Result<bool, SqlError> {
    let rows = load_rows(conn, "PRAGMA query_only", &[], 1)?;
    Ok(rows.first().and_then(|row| row.values().next()).and_then(Value::as_i64).is_some_and(|on| on != 0))
}

impl DynamicSql for AsyncConnectionWrapper<AsyncPgConnection> {
    fn execute_json(&mut self, sql: &str, params: &[Value]) -> Result<usize, SqlError> {
        execute_rows(self, sql, params)
    }

    fn query_json(
        &mut self,
        sql: &str,
        params: &[Value],
        max_rows: usize,
        read_only: bool,
    ) -> Result<Vec<Map<String, Value>>, SqlError> {
        if !read_only {
            return load_rows(self, sql, params, max_rows);
        }
        in_transaction(self, |conn| {
            conn.batch_execute("SET TRANSACTION READ ONLY")?;
            load_rows(conn, sql, params, max_rows)
        })
    }
}

impl DynamicSql for AsyncConnectionWrapper<AsyncMysqlConnection> {
    fn execute_json(&mut self, sql: &str, params: &[Value]) -> Result<usize, SqlError> {
        execute_rows(self, sql, params)
    }

    fn query_json(
        &mut self,
        sql: &str,
        params: &[Value],
        max_rows: usize,
        read_only: bool,
    ) -> Result<Vec<Map<String, Value>>, SqlError> {
        if !read_only {
            return load_rows(self, sql, params, max_rows);
        }
        // Applies to the next transaction only, which is the one begun right after.
        self.batch_execute("SET TRANSACTION READ ONLY")?;
        in_transaction(self, |conn| load_rows(conn, sql, params, max_rows))
    }
}

/// Runs `body` in a transaction: committed when it succeeds, rolled back when it fails.
///
/// Unlike `Connection::transaction`, the error returned is always `body`'s own: when the
/// rollback fails too (the MySQL driver closes the connection after a client-side error
/// such as a wrong parameter count), the plugin learns what it did wrong, not that the
/// connection is gone. A failed rollback leaves diesel's transaction manager marked
/// broken, so the pool discards the connection.
fn in_transaction<C, T>(conn: &mut C, body: impl FnOnce(&mut C) -> Result<T, SqlError>) -> Result<T, SqlError>
where
    C: Connection,
{
    C::TransactionManager::begin_transaction(conn)?;
    match body(conn) {
        Ok(value) => {
            C::TransactionManager::commit_transaction(conn)?;
            Ok(value)
        }
        Err(error) => {
            // The first error is the one to report; see above for a failed rollback.
            let _ = C::TransactionManager::rollback_transaction(conn);
            Err(error)
        }
    }
}

/// A plugin's statement with its parameters bound.
type Boxed<'f, DB> = BoxedSqlQuery<'f, DB, SqlQuery>;

/// What a back-end adds to the shared code: binding a parameter, reading a raw value.
trait JsonBackend: Backend + DieselReserveSpecialization {
    /// Binds one JSON parameter; `index` counts from 1.
    fn bind<'f>(query: Boxed<'f, Self>, value: &Value, index: usize) -> Result<Boxed<'f, Self>, SqlError>;

    /// Turns a non-NULL value into JSON; the error says what is wrong with it.
    fn decode(value: Self::RawValue<'_>) -> Result<Value, String>;
}

impl JsonBackend for Sqlite {
    fn bind<'f>(query: Boxed<'f, Self>, value: &Value, index: usize) -> Result<Boxed<'f, Self>, SqlError> {
        bind_json(query, value, index, |query| query.bind::<Nullable<Text>, _>(None::<String>))
    }

    fn decode(value: SqliteValue<'_, '_, '_>) -> Result<Value, String> {
        decode_sqlite(value)
    }
}

impl JsonBackend for Pg {
    fn bind<'f>(query: Boxed<'f, Self>, value: &Value, index: usize) -> Result<Boxed<'f, Self>, SqlError> {
        bind_json(query, value, index, |query| query.bind::<Unspecified, _>(SqlNull))
    }

    fn decode(value: PgValue<'_>) -> Result<Value, String> {
        decode_pg(&value)
    }
}

impl JsonBackend for Mysql {
    fn bind<'f>(query: Boxed<'f, Self>, value: &Value, index: usize) -> Result<Boxed<'f, Self>, SqlError> {
        bind_json(query, value, index, |query| query.bind::<Nullable<Text>, _>(None::<String>))
    }

    fn decode(value: MysqlValue<'_>) -> Result<Value, String> {
        decode_mysql(value)
    }
}

/// PostgreSQL's "no declared type" (OID 0) for a parameter: the server infers the type from
/// the parameter's use. Only ever bound with [`SqlNull`]: a NULL has no bytes to misread.
#[derive(Debug, Clone, Copy)]
struct Unspecified;

impl HasSqlType<Unspecified> for Pg {
    fn metadata(_lookup: &mut <Pg as TypeMetadata>::MetadataLookup) -> PgTypeMetadata {
        PgTypeMetadata::new(0, 0)
    }
}

/// A NULL parameter of [`Unspecified`] type.
#[derive(Debug, Clone, Copy)]
struct SqlNull;

impl ToSql<Unspecified, Pg> for SqlNull {
    fn to_sql<'b>(&'b self, _out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        Ok(IsNull::Yes)
    }
}

/// Binds one JSON parameter the same way on every back-end but for NULL (`bind_null`).
fn bind_json<'f, DB>(
    query: Boxed<'f, DB>,
    value: &Value,
    index: usize,
    bind_null: impl FnOnce(Boxed<'f, DB>) -> Boxed<'f, DB>,
) -> Result<Boxed<'f, DB>, SqlError>
where
    DB: Backend + HasSqlType<Bool> + HasSqlType<BigInt> + HasSqlType<Double> + HasSqlType<Text>,
    bool: ToSql<Bool, DB>,
    i64: ToSql<BigInt, DB>,
    f64: ToSql<Double, DB>,
    String: ToSql<Text, DB>,
{
    Ok(match value {
        Value::Null => bind_null(query),
        Value::Bool(flag) => query.bind::<Bool, _>(*flag),
        Value::Number(number) => {
            if let Some(integer) = number.as_i64() {
                query.bind::<BigInt, _>(integer)
            } else if number.is_u64() {
                return Err(SqlError::Param {
                    index,
                    reason: format!(
                        "the integer {number} is too large: the largest is {} (pass it as a string)",
                        i64::MAX
                    ),
                });
            } else if let Some(float) = number.as_f64() {
                query.bind::<Double, _>(float)
            } else {
                return Err(SqlError::Param {
                    index,
                    reason: format!("the number {number} cannot be bound"),
                });
            }
        }
        Value::String(text) => query.bind::<Text, _>(text.clone()),
        Value::Array(_) | Value::Object(_) => query.bind::<Text, _>(value.to_string()),
    })
}

/// The statement with every parameter bound.
fn build_query<'f, DB: JsonBackend>(sql: &str, params: &[Value]) -> Result<Boxed<'f, DB>, SqlError> {
    params.iter().enumerate().try_fold(diesel::sql_query(sql).into_boxed::<DB>(), |query, (at, value)| {
        DB::bind(query, value, at + 1)
    })
}

/// Runs a statement, returning the number of rows affected.
fn execute_rows<C>(conn: &mut C, sql: &str, params: &[Value]) -> Result<usize, SqlError>
where
    C: Connection,
    C::Backend: JsonBackend,
{
    Ok(build_query::<C::Backend>(sql, params)?.execute(conn)?)
}

/// Runs a query, turning at most `max_rows` rows into JSON objects.
fn load_rows<C>(
    conn: &mut C,
    sql: &str,
    params: &[Value],
    max_rows: usize,
) -> Result<Vec<Map<String, Value>>, SqlError>
where
    C: LoadConnection,
    C::Backend: JsonBackend,
{
    let query = build_query::<C::Backend>(sql, params)?;
    let mut rows = Vec::new();
    for row in conn.load(query)? {
        let row = row?;
        if rows.len() == max_rows {
            return Err(SqlError::TooManyRows(max_rows));
        }
        rows.push(row_to_json(&row)?);
    }
    Ok(rows)
}

/// One row as a JSON object keyed by column name.
fn row_to_json<'a, DB, R>(row: &R) -> Result<Map<String, Value>, SqlError>
where
    DB: JsonBackend,
    R: Row<'a, DB>,
{
    let mut object = Map::new();
    for at in 0..row.field_count() {
        let Some(field) = row.get(at) else { continue };
        let column = field.field_name().map_or_else(|| format!("column{}", at + 1), str::to_owned);
        // diesel-async's MySQL driver panics on a column type it does not know (GEOMETRY,
        // VECTOR, ...); a plugin's query must not take the host's thread down with it.
        let raw = catch_unwind(AssertUnwindSafe(|| field.value())).map_err(|_| SqlError::Decode {
            column: column.clone(),
            reason: "the database driver cannot read this column's type; cast it to text in the query"
                .to_owned(),
        })?;
        let value = match raw {
            None => Value::Null,
            Some(raw) => {
                DB::decode(raw).map_err(|reason| SqlError::Decode { column: column.clone(), reason })?
            }
        };
        if object.insert(column.clone(), value).is_some() {
            return Err(SqlError::Decode {
                column,
                reason: "the name appears more than once in the result; give the columns distinct names \
                         with AS"
                    .to_owned(),
            });
        }
    }
    Ok(object)
}

// ---------------------------------------------------------------------------------------
// SQLite

/// A SQLite value by its storage class.
fn decode_sqlite(mut value: SqliteValue<'_, '_, '_>) -> Result<Value, String> {
    Ok(match value.value_type() {
        None => Value::Null,
        Some(SqliteType::Long) => Value::from(value.read_long()),
        Some(SqliteType::Double) => float_to_json(value.read_double()),
        Some(SqliteType::Text) => Value::String(value.read_text().to_owned()),
        Some(SqliteType::Binary) => Value::String(hex_bytes(value.read_blob())),
        Some(other) => return Err(format!("unexpected SQLite storage class {other:?}")),
    })
}

// ---------------------------------------------------------------------------------------
// PostgreSQL (binary wire format: numbers big-endian)

/// PostgreSQL type OIDs this module decodes.
mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const XML: u32 = 142;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const UNKNOWN: u32 = 705;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const TIMETZ: u32 = 1266;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;
}

/// Days from 1970-01-01 to 2000-01-01, PostgreSQL's epoch.
const PG_EPOCH_DAYS: i64 = 10_957;
/// Microseconds in a day.
const DAY_MICROS: i64 = 86_400_000_000;

/// A PostgreSQL value by its type OID.
fn decode_pg(value: &PgValue<'_>) -> Result<Value, String> {
    let bytes = value.as_bytes();
    Ok(match value.get_oid().get() {
        oid::BOOL => Value::Bool(fixed::<1>(bytes)?[0] != 0),
        oid::INT2 => Value::from(i16::from_be_bytes(fixed(bytes)?)),
        oid::INT4 => Value::from(i32::from_be_bytes(fixed(bytes)?)),
        oid::INT8 => Value::from(i64::from_be_bytes(fixed(bytes)?)),
        oid::OID => Value::from(u32::from_be_bytes(fixed(bytes)?)),
        oid::FLOAT4 => f32_to_json(f32::from_be_bytes(fixed(bytes)?)),
        oid::FLOAT8 => float_to_json(f64::from_be_bytes(fixed(bytes)?)),
        oid::NUMERIC => Value::String(pg_numeric(bytes)?),
        oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME | oid::CHAR | oid::XML | oid::UNKNOWN => {
            Value::String(utf8(bytes)?.to_owned())
        }
        oid::JSON => parse_json(bytes)?,
        oid::JSONB => match bytes.split_first() {
            Some((1, json)) => parse_json(json)?,
            _ => return Err("unsupported jsonb format version".to_owned()),
        },
        oid::BYTEA => Value::String(hex_bytes(bytes)),
        oid::UUID => Value::String(uuid(&fixed::<16>(bytes)?)),
        oid::DATE => Value::String(match i32::from_be_bytes(fixed(bytes)?) {
            i32::MAX => "infinity".to_owned(),
            i32::MIN => "-infinity".to_owned(),
            days => format_date(i64::from(days) + PG_EPOCH_DAYS),
        }),
        oid::TIMESTAMP => Value::String(pg_timestamp(i64::from_be_bytes(fixed(bytes)?), "")),
        oid::TIMESTAMPTZ => Value::String(pg_timestamp(i64::from_be_bytes(fixed(bytes)?), "Z")),
        oid::TIME => Value::String(format_time(i64::from_be_bytes(fixed(bytes)?))),
        oid::TIMETZ => {
            let [m0, m1, m2, m3, m4, m5, m6, m7, z0, z1, z2, z3] = fixed::<12>(bytes)?;
            let micros = i64::from_be_bytes([m0, m1, m2, m3, m4, m5, m6, m7]);
            // PostgreSQL stores the zone as seconds west of UTC; ISO-8601 writes east.
            let east = -i64::from(i32::from_be_bytes([z0, z1, z2, z3]));
            Value::String(format!("{}{}", format_time(micros), format_offset(east)))
        }
        other => match std::str::from_utf8(bytes) {
            // Enums, citext and other text-valued types send their text; the binary forms
            // of other types are not text (and nearly always hold control bytes).
            Ok(text) if !text.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) => {
                Value::String(text.to_owned())
            }
            _ => {
                return Err(format!(
                    "unsupported PostgreSQL type (OID {other}); cast the column to text in the query \
                     (for example `expr::text`)"
                ))
            }
        },
    })
}

/// PostgreSQL's binary `numeric` as exact decimal text: a header of 16-bit words (digit
/// count, weight of the first digit in powers of 10000, sign, display scale) and base-10000
/// digits.
fn pg_numeric(bytes: &[u8]) -> Result<String, String> {
    let word = |at: usize| -> Result<[u8; 2], String> {
        bytes
            .get(at..at + 2)
            .and_then(|w| w.try_into().ok())
            .ok_or_else(|| "truncated numeric value".to_owned())
    };
    let count = usize::from(u16::from_be_bytes(word(0)?));
    let weight = i64::from(i16::from_be_bytes(word(2)?));
    let sign = u16::from_be_bytes(word(4)?);
    let scale = usize::from(u16::from_be_bytes(word(6)?));
    let digits =
        (0..count).map(|i| Ok(u16::from_be_bytes(word(8 + 2 * i)?))).collect::<Result<Vec<_>, String>>()?;
    let negative = match sign {
        0x0000 => false,
        0x4000 => true,
        0xC000 => return Ok("NaN".to_owned()),
        0xD000 => return Ok("Infinity".to_owned()),
        0xF000 => return Ok("-Infinity".to_owned()),
        _ => return Err(format!("unknown numeric sign {sign:#06x}")),
    };
    // The digit group at power 10000^(weight - i) is digits[i]; absent groups are 0.
    let group = |power: i64| -> u16 {
        usize::try_from(weight - power).ok().and_then(|i| digits.get(i)).copied().unwrap_or(0)
    };
    let mut text = String::new();
    if negative {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        text.push_str(&group(weight).to_string());
        for power in (0..weight).rev() {
            text.push_str(&format!("{:04}", group(power)));
        }
    }
    if scale > 0 {
        let mut fraction = String::with_capacity(scale + 4);
        let mut power = -1;
        while fraction.len() < scale {
            fraction.push_str(&format!("{:04}", group(power)));
            power -= 1;
        }
        fraction.truncate(scale);
        text.push('.');
        text.push_str(&fraction);
    }
    Ok(text)
}

/// A `timestamp` / `timestamptz` (microseconds since 2000-01-01 00:00:00) as ISO-8601.
fn pg_timestamp(micros: i64, zone: &str) -> String {
    match micros {
        i64::MAX => "infinity".to_owned(),
        i64::MIN => "-infinity".to_owned(),
        _ => {
            let days = micros.div_euclid(DAY_MICROS) + PG_EPOCH_DAYS;
            format!("{}T{}{zone}", format_date(days), format_time(micros.rem_euclid(DAY_MICROS)))
        }
    }
}

/// A UUID in its usual 8-4-4-4-12 form.
fn uuid(bytes: &[u8; 16]) -> String {
    let hex = hex_digits(bytes);
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// Parses a JSON document the database sent.
fn parse_json(bytes: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON from the database: {e}"))
}

// ---------------------------------------------------------------------------------------
// MySQL / MariaDB

/// A MySQL value by its column type.
fn decode_mysql(value: MysqlValue<'_>) -> Result<Value, String> {
    let bytes = value.as_bytes();
    let unreadable =
        |what: &str, e: Box<dyn std::error::Error + Send + Sync>| format!("cannot read this {what}: {e}");
    Ok(match value.value_type() {
        MysqlType::Tiny | MysqlType::Short | MysqlType::Long | MysqlType::LongLong => Value::from(
            <i64 as FromSql<BigInt, Mysql>>::from_sql(value).map_err(|e| unreadable("integer", e))?,
        ),
        MysqlType::UnsignedTiny
        | MysqlType::UnsignedShort
        | MysqlType::UnsignedLong
        | MysqlType::UnsignedLongLong => Value::from(
            <u64 as FromSql<Unsigned<BigInt>, Mysql>>::from_sql(value)
                .map_err(|e| unreadable("integer", e))?,
        ),
        MysqlType::Float => {
            f32_to_json(<f32 as FromSql<Float, Mysql>>::from_sql(value).map_err(|e| unreadable("FLOAT", e))?)
        }
        MysqlType::Double => float_to_json(
            <f64 as FromSql<Double, Mysql>>::from_sql(value).map_err(|e| unreadable("DOUBLE", e))?,
        ),
        MysqlType::Numeric => Value::String(utf8(bytes)?.to_owned()),
        MysqlType::Date => {
            let t =
                <MysqlTime as FromSql<Date, Mysql>>::from_sql(value).map_err(|e| unreadable("DATE", e))?;
            Value::String(format!("{:04}-{:02}-{:02}", t.year, t.month, t.day))
        }
        MysqlType::DateTime | MysqlType::Timestamp => {
            let t = <MysqlTime as FromSql<Datetime, Mysql>>::from_sql(value)
                .map_err(|e| unreadable("DATETIME", e))?;
            Value::String(format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{}",
                t.year,
                t.month,
                t.day,
                t.hour,
                t.minute,
                t.second,
                fraction(t.second_part)
            ))
        }
        MysqlType::Time => {
            let t = <MysqlTime as FromSql<Time, Mysql>>::from_sql(value)
                .map_err(|e| format!("cannot read this TIME ({e}); use CAST(... AS CHAR) in the query"))?;
            let hours = u64::from(t.day) * 24 + u64::from(t.hour);
            Value::String(format!("{hours:02}:{:02}:{:02}{}", t.minute, t.second, fraction(t.second_part)))
        }
        MysqlType::Bit => {
            if bytes.len() > 8 {
                return Err(format!("a BIT value of {} bytes does not fit 64 bits", bytes.len()));
            }
            Value::from(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
        }
        // String, Enum, Set, Blob (binary strings, and TEXT on some servers), and any type
        // a later diesel adds.
        _ => text_or_hex(bytes),
    })
}

// ---------------------------------------------------------------------------------------
// Shared helpers

/// Exactly `N` bytes, or what was wrong.
fn fixed<const N: usize>(bytes: &[u8]) -> Result<[u8; N], String> {
    bytes.try_into().map_err(|_| format!("expected {N} bytes from the database, got {}", bytes.len()))
}

/// UTF-8 text, or what was wrong.
fn utf8(bytes: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(bytes).map_err(|e| format!("the text is not valid UTF-8: {e}"))
}

/// A string when the bytes are UTF-8, else `"\x<hex>"`.
fn text_or_hex(bytes: &[u8]) -> Value {
    Value::String(std::str::from_utf8(bytes).map_or_else(|_| hex_bytes(bytes), str::to_owned))
}

/// Lower-case hexadecimal digits of `bytes`.
fn hex_digits(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    hex
}

/// Binary data as PostgreSQL writes `bytea`: `\x` and lower-case hex.
fn hex_bytes(bytes: &[u8]) -> String {
    format!("\\x{}", hex_digits(bytes))
}

/// A float as a JSON number; NaN and the infinities, which JSON lacks, as strings.
fn float_to_json(float: f64) -> Value {
    Number::from_f64(float).map_or_else(
        || {
            let name = if float.is_nan() {
                "NaN"
            } else if float > 0.0 {
                "Infinity"
            } else {
                "-Infinity"
            };
            Value::String(name.to_owned())
        },
        Value::Number,
    )
}

/// A single-precision float by its shortest decimal form (`0.1`, not `0.10000000149011612`).
fn f32_to_json(float: f32) -> Value {
    float_to_json(float.to_string().parse().unwrap_or_else(|_| f64::from(float)))
}

/// `.` and the fractional digits of a number of microseconds, without trailing zeros;
/// empty for zero.
fn fraction(micros: impl Display) -> String {
    let digits = format!("{micros:0>6}");
    let digits = digits.trim_end_matches('0');
    if digits.is_empty() {
        String::new()
    } else {
        format!(".{digits}")
    }
}

/// Microseconds since midnight as `HH:MM:SS[.ffffff]`.
fn format_time(micros: i64) -> String {
    let seconds = micros.div_euclid(1_000_000);
    format!(
        "{:02}:{:02}:{:02}{}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        fraction(micros.rem_euclid(1_000_000))
    )
}

/// A UTC offset in seconds east as `+HH:MM` (`+HH:MM:SS` when it has seconds).
fn format_offset(east: i64) -> String {
    let sign = if east < 0 { '-' } else { '+' };
    let east = east.abs();
    let (hours, minutes, seconds) = (east / 3600, east / 60 % 60, east % 60);
    if seconds == 0 {
        format!("{sign}{hours:02}:{minutes:02}")
    } else {
        format!("{sign}{hours:02}:{minutes:02}:{seconds:02}")
    }
}

/// Days since 1970-01-01 as an ISO-8601 date (proleptic Gregorian; year 0 is 1 BC; years
/// outside 0..=9999 carry a sign).
fn format_date(days: i64) -> String {
    let (year, month, day) = civil_from_days(days);
    if (0..=9999).contains(&year) {
        format!("{year:04}-{month:02}-{day:02}")
    } else {
        format!("{year:+05}-{month:02}-{day:02}")
    }
}

/// Year, month, day of a number of days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sqlite() -> SqliteConnection {
        SqliteConnection::establish(":memory:").expect("an in-memory SQLite database")
    }

    fn with_table() -> SqliteConnection {
        let mut conn = sqlite();
        conn.execute_json(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, i INTEGER, r REAL, s TEXT, flag BOOLEAN, doc TEXT, \
             list TEXT, empty TEXT, b BLOB)",
            &[],
        )
        .expect("create table");
        conn
    }

    #[test]
    fn binds_every_parameter_type_and_reads_each_value_back() {
        let mut conn = with_table();
        let inserted = conn
            .execute_json(
                "INSERT INTO t (i, r, s, flag, doc, list, empty, b) VALUES (?, ?, ?, ?, ?, ?, ?, x'00ff10')",
                &[
                    json!(-9_007_199_254_740_993_i64),
                    json!(2.5),
                    json!("héllo ' \"; DROP TABLE t; --"),
                    json!(true),
                    json!({"a": 1, "b": [true, null]}),
                    json!([1, "two"]),
                    Value::Null,
                ],
            )
            .expect("insert");
        assert_eq!(inserted, 1);

        let rows = conn
            .query_json(
                "SELECT id, i, r, s, flag, doc, list, empty, b, 1e999 AS inf FROM t WHERE s = ? AND flag = ?",
                &[json!("héllo ' \"; DROP TABLE t; --"), json!(true)],
                10,
                false,
            )
            .expect("query");
        assert_eq!(rows.len(), 1);
        assert_eq!(
            Value::Object(rows[0].clone()),
            json!({
                "id": 1,
                "i": -9_007_199_254_740_993_i64,
                "r": 2.5,
                "s": "héllo ' \"; DROP TABLE t; --",
                "flag": 1,
                "doc": "{\"a\":1,\"b\":[true,null]}",
                "list": "[1,\"two\"]",
                "empty": null,
                "b": "\\x00ff10",
                "inf": "Infinity",
            })
        );
    }

    #[test]
    fn an_integer_beyond_i64_is_a_parameter_error() {
        let mut conn = with_table();
        let error = conn.execute_json("INSERT INTO t (i, r) VALUES (?, ?)", &[json!(1), json!(u64::MAX)]);
        assert!(matches!(error, Err(SqlError::Param { index: 2, .. })), "{error:?}");
    }

    #[test]
    fn more_rows_than_allowed_is_an_error() {
        let mut conn = with_table();
        for i in 0..3 {
            conn.execute_json("INSERT INTO t (i) VALUES (?)", &[json!(i)]).expect("insert");
        }
        let error = conn.query_json("SELECT i FROM t", &[], 2, false);
        assert!(matches!(error, Err(SqlError::TooManyRows(2))), "{error:?}");
        assert_eq!(
            error.map_err(|e| e.to_string()).unwrap_err(),
            "the query returned more than 2 rows; add a LIMIT"
        );
        assert_eq!(conn.query_json("SELECT i FROM t", &[], 3, false).expect("three rows").len(), 3);
        assert!(conn.query_json("SELECT i FROM t WHERE i > 5", &[], 0, false).expect("no rows").is_empty());
    }

    #[test]
    fn a_write_under_read_only_fails_and_query_only_is_restored() {
        let mut conn = with_table();
        let error = conn.query_json("INSERT INTO t (i) VALUES (?) RETURNING id", &[json!(1)], 10, true);
        assert!(matches!(&error, Err(SqlError::ReadOnly(m)) if m.contains("readonly")), "{error:?}");
        let error = conn.query_json("DELETE FROM t", &[], 10, true);
        assert!(matches!(error, Err(SqlError::ReadOnly(_))), "{error:?}");

        assert!(!sqlite_query_only(&mut conn).expect("pragma"));
        assert_eq!(conn.execute_json("INSERT INTO t (i) VALUES (?)", &[json!(7)]).expect("a later write"), 1);
        let rows = conn.query_json("SELECT i FROM t", &[], 10, true).expect("a read under read-only");
        assert_eq!(rows, vec![Map::from_iter([("i".to_owned(), json!(7))])]);
        assert!(!sqlite_query_only(&mut conn).expect("pragma"));

        // A connection already query-only stays so.
        conn.execute_json("PRAGMA query_only = ON", &[]).expect("pragma on");
        conn.query_json("SELECT 1 AS one", &[], 1, true).expect("read");
        assert!(sqlite_query_only(&mut conn).expect("pragma"));
    }

    #[test]
    fn a_bad_parameter_count_is_the_database_error() {
        let mut conn = sqlite();
        let error = conn.query_json("SELECT ? AS a", &[json!(1), json!(2)], 10, false);
        assert!(matches!(&error, Err(SqlError::Database(m)) if m.contains("out of range")), "{error:?}");
        let error = conn.execute_json("INSERT INTO missing VALUES (?)", &[json!(1)]);
        assert!(matches!(&error, Err(SqlError::Database(m)) if m.contains("no such table")), "{error:?}");
    }

    #[test]
    fn a_duplicate_column_name_is_an_error() {
        let mut conn = sqlite();
        let error = conn.query_json("SELECT 1 AS a, 2 AS a", &[], 10, false);
        assert!(matches!(&error, Err(SqlError::Decode { column, .. }) if column == "a"), "{error:?}");
    }

    #[test]
    fn dates_and_numerics_format_like_postgresql() {
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(format_date(PG_EPOCH_DAYS), "2000-01-01");
        assert_eq!(format_date(PG_EPOCH_DAYS + 59), "2000-02-29");
        assert_eq!(format_date(-719_528), "0000-01-01");
        assert_eq!(format_date(-719_529), "-0001-12-31");
        assert_eq!(format_date(2_932_897), "+10000-01-01");
        assert_eq!(pg_timestamp(-1, "Z"), "1999-12-31T23:59:59.999999Z");
        assert_eq!(pg_timestamp(1_500_000, ""), "2000-01-01T00:00:01.5");
        assert_eq!(format_offset(-(5 * 3600 + 30 * 60)), "-05:30");

        let numeric = |weight: i16, sign: u16, scale: u16, digits: &[u16]| {
            let mut bytes = Vec::new();
            for word in
                [digits.len() as u16, weight as u16, sign, scale].into_iter().chain(digits.iter().copied())
            {
                bytes.extend_from_slice(&word.to_be_bytes());
            }
            pg_numeric(&bytes).expect("numeric")
        };
        assert_eq!(numeric(0, 0, 0, &[]), "0");
        assert_eq!(numeric(0, 0, 2, &[]), "0.00");
        assert_eq!(numeric(1, 0x4000, 3, &[12, 3456, 7800]), "-123456.780");
        assert_eq!(numeric(-2, 0, 8, &[12]), "0.00000012");
        assert_eq!(numeric(-1, 0, 6, &[12]), "0.001200");
        assert_eq!(numeric(2, 0, 0, &[1]), "100000000");
        assert_eq!(numeric(0, 0xC000, 0, &[]), "NaN");
        assert_eq!(uuid(&[0xab; 16]), "abababab-abab-abab-abab-abababababab");
    }
}
