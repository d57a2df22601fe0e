//! One statement interface over both drivers: rusqlite for SQLite, rust-postgres for
//! PostgreSQL. The store's SQL is written once, with SQLite's placeholders (`?1`, `:name`);
//! for PostgreSQL they become `$N` (see [`translate`]), and the PostgreSQL schema defines the
//! few SQLite functions the SQL uses (`total`, multi-argument `min`/`max`). Where the dialects
//! differ, [`Tx::pick`] chooses a statement per backend.
//!
//! Values cross as [`Arg`] (bound to whatever type PostgreSQL inferred for the placeholder) and
//! are read through [`Col`], which takes PostgreSQL's integer widths and booleans as `i64`, as
//! SQLite gives them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error as _;

use postgres::types::{IsNull, ToSql, Type, to_sql_checked};

/// Which server a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A driver error, or a value the store refuses.
#[derive(Debug)]
pub enum SqlError {
    Lite(rusqlite::Error),
    Pg(postgres::Error),
    /// A query for one row found none.
    NoRows,
    /// A column's value the reader cannot take (type, range, an unknown spelling).
    Value(String),
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SqlError::Lite(e) => e.fmt(f),
            SqlError::Pg(e) => match e.as_db_error() {
                // The server's own words (the driver's Display says only "db error").
                Some(db) => write!(f, "{}: {}", db.severity(), db.message()),
                None => match e.source() {
                    Some(source) => write!(f, "{e}: {source}"),
                    None => e.fmt(f),
                },
            },
            SqlError::NoRows => f.write_str("query returned no rows"),
            SqlError::Value(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for SqlError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SqlError::Lite(e) => e.source(),
            // Its source is part of the message (above).
            SqlError::Pg(_) => None,
            _ => None,
        }
    }
}

impl From<rusqlite::Error> for SqlError {
    fn from(e: rusqlite::Error) -> SqlError {
        match e {
            rusqlite::Error::QueryReturnedNoRows => SqlError::NoRows,
            e => SqlError::Lite(e),
        }
    }
}

impl From<postgres::Error> for SqlError {
    fn from(e: postgres::Error) -> SqlError {
        SqlError::Pg(e)
    }
}

pub type Result<T, E = SqlError> = std::result::Result<T, E>;

/// `.optional()` on a one-row query, as rusqlite's `OptionalExtension`.
pub trait Optional<T> {
    fn optional(self) -> Result<Option<T>>;
}

impl<T> Optional<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(SqlError::NoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A bound value.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(std::borrow::Cow<'a, str>),
    /// A list of integers: PostgreSQL's `bigint[]` (bulk writes through `unnest`).
    Ints(std::borrow::Cow<'a, [i64]>),
}

/// A value that binds as an [`Arg`] (what `args!` and `named!` take, by reference).
pub trait ToArg {
    fn to_arg(&self) -> Arg<'_>;
}

macro_rules! int_to_arg {
    ($($t:ty),*) => {$(
        impl ToArg for $t {
            fn to_arg(&self) -> Arg<'_> {
                Arg::Int(i64::from(*self))
            }
        }
    )*};
}
int_to_arg!(i64, i32, u32, u16, u8, bool);

impl ToArg for usize {
    fn to_arg(&self) -> Arg<'_> {
        Arg::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl ToArg for f64 {
    fn to_arg(&self) -> Arg<'_> {
        Arg::Real(*self)
    }
}

impl ToArg for str {
    fn to_arg(&self) -> Arg<'_> {
        Arg::Text(self.into())
    }
}

impl ToArg for String {
    fn to_arg(&self) -> Arg<'_> {
        Arg::Text(self.as_str().into())
    }
}

impl ToArg for [i64] {
    fn to_arg(&self) -> Arg<'_> {
        Arg::Ints(self.into())
    }
}

impl ToArg for Vec<i64> {
    fn to_arg(&self) -> Arg<'_> {
        Arg::Ints(self.as_slice().into())
    }
}

impl<T: ToArg> ToArg for Option<T> {
    fn to_arg(&self) -> Arg<'_> {
        self.as_ref().map_or(Arg::Null, ToArg::to_arg)
    }
}

impl<T: ToArg + ?Sized> ToArg for &T {
    fn to_arg(&self) -> Arg<'_> {
        (**self).to_arg()
    }
}

impl ToArg for Arg<'_> {
    fn to_arg(&self) -> Arg<'_> {
        self.clone()
    }
}

/// `args![a, b, c]`: positional arguments (`?1`, `?2`, …).
macro_rules! args {
    () => { &[] as &[$crate::store::sql::Arg<'_>] };
    ($($v:expr),+ $(,)?) => { &[$($crate::store::sql::ToArg::to_arg(&$v)),+] as &[$crate::store::sql::Arg<'_>] };
}
pub(crate) use args;

/// `named![":a" => x, ":b" => y]`: named arguments.
macro_rules! named {
    ($($k:literal => $v:expr),+ $(,)?) => {
        $crate::store::sql::Params::Named(&[$(($k, $crate::store::sql::ToArg::to_arg(&$v))),+])
    };
}
pub(crate) use named;

/// Positional or named arguments of one statement.
#[derive(Debug, Clone, Copy)]
pub enum Params<'p, 'a> {
    Positional(&'p [Arg<'a>]),
    Named(&'p [(&'static str, Arg<'a>)]),
}

impl<'p, 'a> From<&'p [Arg<'a>]> for Params<'p, 'a> {
    fn from(v: &'p [Arg<'a>]) -> Self {
        Params::Positional(v)
    }
}

impl<'p, 'a, const N: usize> From<&'p [Arg<'a>; N]> for Params<'p, 'a> {
    fn from(v: &'p [Arg<'a>; N]) -> Self {
        Params::Positional(v)
    }
}

impl<'p, 'a> From<&'p Vec<Arg<'a>>> for Params<'p, 'a> {
    fn from(v: &'p Vec<Arg<'a>>) -> Self {
        Params::Positional(v)
    }
}

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Arg::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Arg::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Arg::Real(v) => ToSqlOutput::Borrowed(ValueRef::Real(*v)),
            Arg::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            // SQLite has no arrays: a list goes as JSON text (read with json_each).
            Arg::Ints(v) => ToSqlOutput::Owned(rusqlite::types::Value::Text(
                serde_json::to_string(v.as_ref()).unwrap_or_default(),
            )),
        })
    }
}

impl ToSql for Arg<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let mismatch = || format!("cannot bind {self:?} to a PostgreSQL {ty}");
        match self {
            Arg::Null => Ok(IsNull::Yes),
            Arg::Int(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                Type::FLOAT8 => (*v as f64).to_sql(ty, out),
                Type::BOOL => (*v != 0).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => v.to_string().to_sql(ty, out),
                _ => Err(mismatch().into()),
            },
            Arg::Real(v) => match *ty {
                Type::FLOAT8 => v.to_sql(ty, out),
                Type::FLOAT4 => (*v as f32).to_sql(ty, out),
                _ => Err(mismatch().into()),
            },
            Arg::Text(v) => v.as_ref().to_sql(ty, out),
            Arg::Ints(v) => v.as_ref().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        // The value checks the type when it is bound (above).
        true
    }

    to_sql_checked!();
}

/// A column's value as the store reads it.
pub trait Col: Sized {
    fn lite(row: &rusqlite::Row<'_>, i: usize) -> Result<Self>;
    fn pg(row: &postgres::Row, i: usize) -> Result<Self>;
}

/// PostgreSQL's integers of any width, booleans and whole floats as `i64`; `None` for NULL.
fn pg_int(row: &postgres::Row, i: usize) -> Result<Option<i64>> {
    let ty = row.columns()[i].type_().clone();
    let v = match ty {
        Type::INT8 => row.try_get::<_, Option<i64>>(i)?,
        Type::INT4 => row.try_get::<_, Option<i32>>(i)?.map(i64::from),
        Type::INT2 => row.try_get::<_, Option<i16>>(i)?.map(i64::from),
        Type::BOOL => row.try_get::<_, Option<bool>>(i)?.map(i64::from),
        Type::FLOAT8 => match row.try_get::<_, Option<f64>>(i)? {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Some(f as i64),
            Some(f) => {
                return Err(SqlError::Value(format!(
                    "column {i} holds {f}, not an integer"
                )));
            }
            None => None,
        },
        _ => {
            return Err(SqlError::Value(format!(
                "column {i} is a PostgreSQL {ty}, not an integer"
            )));
        }
    };
    Ok(v)
}

fn pg_real(row: &postgres::Row, i: usize) -> Result<Option<f64>> {
    match *row.columns()[i].type_() {
        Type::FLOAT8 => Ok(row.try_get::<_, Option<f64>>(i)?),
        Type::FLOAT4 => Ok(row.try_get::<_, Option<f32>>(i)?.map(f64::from)),
        _ => Ok(pg_int(row, i)?.map(|v| v as f64)),
    }
}

fn required<T>(v: Option<T>, i: usize) -> Result<T> {
    v.ok_or_else(|| SqlError::Value(format!("column {i} is NULL")))
}

impl Col for i64 {
    fn lite(row: &rusqlite::Row<'_>, i: usize) -> Result<Self> {
        Ok(row.get(i)?)
    }
    fn pg(row: &postgres::Row, i: usize) -> Result<Self> {
        required(pg_int(row, i)?, i)
    }
}

impl Col for Option<i64> {
    fn lite(row: &rusqlite::Row<'_>, i: usize) -> Result<Self> {
        Ok(row.get(i)?)
    }
    fn pg(row: &postgres::Row, i: usize) -> Result<Self> {
        pg_int(row, i)
    }
}

impl Col for bool {
    fn lite(row: &rusqlite::Row<'_>, i: usize) -> Result<Self> {
        Ok(row.get(i)?)
    }
    fn pg(row: &postgres::Row, i: usize) -> Result<Self> {
        Ok(required(pg_int(row, i)?, i)? != 0)
    }
}

impl Col for f64 {
    fn lite(row: &rusqlite::Row<'_>, i: usize) -> Result<Self> {
        Ok(row.get(i)?)
    }
    fn pg(row: &postgres::Row, i: usize) -> Result<Self> {
        required(pg_real(row, i)?, i)
    }
}

impl Col for Option<f64> {
    fn lite(row: &rusqlite::Row<'_>, i: usize) -> Result<Self> {
        Ok(row.get(i)?)
    }
    fn pg(row: &postgres::Row, i: usize) -> Result<Self> {
        pg_real(row, i)
    }
}

impl Col for String {
    fn lite(row: &rusqlite::Row<'_>, i: usize) -> Result<Self> {
        Ok(row.get(i)?)
    }
    fn pg(row: &postgres::Row, i: usize) -> Result<Self> {
        Ok(row.try_get(i)?)
    }
}

impl Col for Option<String> {
    fn lite(row: &rusqlite::Row<'_>, i: usize) -> Result<Self> {
        Ok(row.get(i)?)
    }
    fn pg(row: &postgres::Row, i: usize) -> Result<Self> {
        Ok(row.try_get(i)?)
    }
}

/// One row of an answer.
#[derive(Clone, Copy)]
pub enum Row<'r> {
    Lite(&'r rusqlite::Row<'r>),
    Pg(&'r postgres::Row),
}

impl Row<'_> {
    /// Column `i` (0-based).
    pub fn get<T: Col>(&self, i: usize) -> Result<T> {
        match self {
            Row::Lite(r) => T::lite(r, i),
            Row::Pg(r) => T::pg(r, i),
        }
    }

    /// Column `i` as text whatever its type (comparisons of whole tables, `copy`).
    pub fn value(&self, i: usize) -> Result<Value> {
        match self {
            Row::Lite(r) => Ok(match r.get_ref(i)? {
                rusqlite::types::ValueRef::Null => Value::Null,
                rusqlite::types::ValueRef::Integer(v) => Value::Int(v),
                rusqlite::types::ValueRef::Real(v) => Value::Real(v),
                rusqlite::types::ValueRef::Text(t) => {
                    Value::Text(String::from_utf8_lossy(t).into_owned())
                }
                rusqlite::types::ValueRef::Blob(b) => {
                    Value::Text(String::from_utf8_lossy(b).into_owned())
                }
            }),
            Row::Pg(r) => {
                let ty = r.columns()[i].type_().clone();
                Ok(match ty {
                    Type::FLOAT8 | Type::FLOAT4 => pg_real(r, i)?.map_or(Value::Null, Value::Real),
                    Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => r
                        .try_get::<_, Option<String>>(i)?
                        .map_or(Value::Null, Value::Text),
                    _ => pg_int(r, i)?.map_or(Value::Null, Value::Int),
                })
            }
        }
    }
}

/// A column's value of any type.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

impl Value {
    /// As a bound argument.
    pub fn as_arg(&self) -> Arg<'_> {
        match self {
            Value::Null => Arg::Null,
            Value::Int(v) => Arg::Int(*v),
            Value::Real(v) => Arg::Real(*v),
            Value::Text(v) => Arg::Text(v.as_str().into()),
        }
    }
}

/// Runs `f`, which blocks on PostgreSQL's driver (it drives its own runtime), off the async
/// runtime when called on one of its threads: the driver cannot block inside it.
pub fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        // A current-thread runtime (tests, tools) has no thread to spare: a short-lived one.
        Ok(_) => std::thread::scope(|s| {
            s.spawn(f)
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        }),
        Err(_) => f(),
    }
}

/// A PostgreSQL connection with its prepared statements (prepared once per connection).
pub struct Pg {
    /// Always `Some` until dropped (taken then, to close it off the async runtime).
    client: Option<postgres::Client>,
    cache: HashMap<String, (postgres::Statement, Vec<String>)>,
}

impl Drop for Pg {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            off_runtime(|| drop(client));
        }
    }
}

impl Pg {
    pub fn new(client: postgres::Client) -> Pg {
        Pg {
            client: Some(client),
            cache: HashMap::new(),
        }
    }

    fn client(&mut self) -> &mut postgres::Client {
        self.client
            .as_mut()
            .expect("the connection is open until dropped")
    }

    /// The statement for `sql` (translated, prepared and kept on first use) and the order of
    /// its named parameters.
    fn statement(&mut self, sql: &str) -> Result<(postgres::Statement, Vec<String>)> {
        if let Some(found) = self.cache.get(sql) {
            return Ok(found.clone());
        }
        let (text, names) = translate(sql);
        let client = self.client();
        let stmt = off_runtime(|| client.prepare(&text))?;
        self.cache
            .insert(sql.to_string(), (stmt.clone(), names.clone()));
        Ok((stmt, names))
    }
}

/// SQLite's placeholders as PostgreSQL's: `?N` → `$N`, `?` → the next number, `:name` → a
/// number per distinct name (returned in order); SQLite's `INDEXED BY name` hints are dropped,
/// `CAST(… AS INTEGER)` is a BIGINT and `sum(` is `int_sum(` (an integer sum, as SQLite's). String literals, quoted identifiers,
/// comments and `::` casts are left as they are.
pub fn translate(sql: &str) -> (String, Vec<String>) {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 8);
    let mut names: Vec<String> = Vec::new();
    let mut next = 0usize;
    let mut i = 0;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    while i < b.len() {
        let c = b[i];
        match c {
            b'\'' | b'"' => {
                let end = b[i + 1..]
                    .iter()
                    .position(|&x| x == c)
                    .map_or(b.len(), |p| i + 1 + p + 1);
                out.push_str(&sql[i..end]);
                i = end;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                let end = b[i..]
                    .iter()
                    .position(|&x| x == b'\n')
                    .map_or(b.len(), |p| i + p);
                out.push_str(&sql[i..end]);
                i = end;
            }
            b'?' => {
                let start = i + 1;
                let mut end = start;
                while end < b.len() && b[end].is_ascii_digit() {
                    end += 1;
                }
                if end > start {
                    out.push('$');
                    out.push_str(&sql[start..end]);
                } else {
                    next += 1;
                    out.push_str(&format!("${next}"));
                }
                i = end;
            }
            // SQLite's sum() of integers is an integer (an error past 2^63); PostgreSQL's is
            // numeric: int_sum (schema/postgres) keeps it a bigint, with the same error.
            b's' if sql[i..].starts_with("sum(") && (i == 0 || !ident(b[i - 1])) => {
                out.push_str("int_sum(");
                i += "sum(".len();
            }
            // SQLite's INTEGER is 64-bit; PostgreSQL's is 32.
            b'A' if sql[i..].starts_with("AS INTEGER)") => {
                out.push_str("AS BIGINT)");
                i += "AS INTEGER)".len();
            }
            // SQLite's index hint has no PostgreSQL form: its planner chooses.
            b'I' if sql[i..].starts_with("INDEXED BY ") => {
                let name_start = i + "INDEXED BY ".len();
                let mut end = name_start;
                while end < b.len() && ident(b[end]) {
                    end += 1;
                }
                i = end;
            }
            b':' if b.get(i + 1) == Some(&b':') => {
                out.push_str("::");
                i += 2;
            }
            b':' if b
                .get(i + 1)
                .is_some_and(|&x| x.is_ascii_alphabetic() || x == b'_') =>
            {
                let start = i;
                let mut end = i + 1;
                while end < b.len() && ident(b[end]) {
                    end += 1;
                }
                let name = &sql[start..end];
                let n = match names.iter().position(|x| x == name) {
                    Some(p) => p + 1,
                    None => {
                        names.push(name.to_string());
                        names.len()
                    }
                };
                out.push_str(&format!("${n}"));
                i = end;
            }
            _ => {
                let ch = sql[i..].chars().next().unwrap_or(' ');
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    (out, names)
}

/// Where statements run: a connection (or the transaction open on it).
#[derive(Clone, Copy)]
pub enum Tx<'c> {
    Lite(&'c rusqlite::Connection),
    Pg(&'c RefCell<Pg>),
}

impl<'c> Tx<'c> {
    pub fn backend(&self) -> Backend {
        match self {
            Tx::Lite(_) => Backend::Sqlite,
            Tx::Pg(_) => Backend::Postgres,
        }
    }

    /// `sqlite` on SQLite, `postgres` on PostgreSQL.
    pub fn pick<'s>(&self, sqlite: &'s str, postgres: &'s str) -> &'s str {
        match self {
            Tx::Lite(_) => sqlite,
            Tx::Pg(_) => postgres,
        }
    }

    /// A subquery of one column `value`: the integers of the JSON array bound at `param`.
    pub fn json_ints(&self, param: &str) -> String {
        match self {
            Tx::Lite(_) => format!("(SELECT value FROM json_each({param}))"),
            Tx::Pg(_) => format!(
                "(SELECT CAST(e.value AS BIGINT) AS value \
                 FROM json_array_elements_text(CAST({param} AS json)) AS e(value))"
            ),
        }
    }

    /// As [`Tx::json_ints`], for an array of strings.
    pub fn json_texts(&self, param: &str) -> String {
        match self {
            Tx::Lite(_) => format!("(SELECT value FROM json_each({param}))"),
            Tx::Pg(_) => format!(
                "(SELECT e.value FROM json_array_elements_text(CAST({param} AS json)) AS e(value))"
            ),
        }
    }

    /// A statement, prepared once per connection.
    pub fn prepare_cached(&self, sql: &str) -> Result<Stmt<'c>> {
        Ok(match self {
            Tx::Lite(c) => Stmt::Lite(c.prepare_cached(sql)?),
            Tx::Pg(pg) => {
                let (stmt, names) = pg.borrow_mut().statement(sql)?;
                Stmt::Pg(pg, stmt, names)
            }
        })
    }

    /// A statement (prepared once per connection on PostgreSQL too).
    pub fn prepare(&self, sql: &str) -> Result<Stmt<'c>> {
        self.prepare_cached(sql)
    }

    /// Runs one statement; the number of rows it changed.
    pub fn execute<'p, 'a>(&self, sql: &str, params: impl Into<Params<'p, 'a>>) -> Result<usize>
    where
        'a: 'p,
    {
        self.prepare_cached(sql)?.execute(params)
    }

    /// The one row `sql` answers, read by `f`; [`SqlError::NoRows`] when there is none.
    pub fn query_row<'p, 'a, T>(
        &self,
        sql: &str,
        params: impl Into<Params<'p, 'a>>,
        f: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<T>
    where
        'a: 'p,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }

    /// Statements without arguments, separated by semicolons (migrations, pragmas).
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match self {
            Tx::Lite(c) => Ok(c.execute_batch(sql)?),
            Tx::Pg(pg) => {
                let mut pg = pg.borrow_mut();
                let client = pg.client();
                Ok(off_runtime(|| client.batch_execute(sql))?)
            }
        }
    }
}

/// A prepared statement.
pub enum Stmt<'c> {
    Lite(rusqlite::CachedStatement<'c>),
    Pg(&'c RefCell<Pg>, postgres::Statement, Vec<String>),
}

/// Binds `params` for PostgreSQL: named ones in the order [`translate`] numbered them.
fn pg_args<'x>(
    params: &'x Params<'_, '_>,
    names: &[String],
) -> Result<Vec<&'x (dyn ToSql + Sync)>> {
    match params {
        Params::Positional(args) => Ok(args.iter().map(|a| a as &(dyn ToSql + Sync)).collect()),
        Params::Named(pairs) => names
            .iter()
            .map(|n| {
                pairs
                    .iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, a)| a as &(dyn ToSql + Sync))
                    .ok_or_else(|| SqlError::Value(format!("no value for parameter {n}")))
            })
            .collect(),
    }
}

fn lite_bind(stmt: &mut rusqlite::Statement<'_>, params: &Params<'_, '_>) -> Result<()> {
    match params {
        Params::Positional(args) => {
            for (i, a) in args.iter().enumerate() {
                stmt.raw_bind_parameter(i + 1, a)?;
            }
        }
        Params::Named(pairs) => {
            for (k, a) in pairs.iter() {
                match stmt.parameter_index(k)? {
                    Some(i) => stmt.raw_bind_parameter(i, a)?,
                    None => return Err(rusqlite::Error::InvalidParameterName(k.to_string()).into()),
                }
            }
        }
    }
    Ok(())
}

impl Stmt<'_> {
    pub fn execute<'p, 'a>(&mut self, params: impl Into<Params<'p, 'a>>) -> Result<usize>
    where
        'a: 'p,
    {
        let params = params.into();
        match self {
            Stmt::Lite(s) => {
                s.clear_bindings();
                lite_bind(s, &params)?;
                Ok(s.raw_execute()?)
            }
            Stmt::Pg(pg, stmt, names) => {
                let args = pg_args(&params, names)?;
                let mut pg = pg.borrow_mut();
                let client = pg.client();
                let n = off_runtime(|| client.execute(&*stmt, &args))?;
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            }
        }
    }

    /// Every row, each read by `f`.
    pub fn query_map<'p, 'a, T>(
        &mut self,
        params: impl Into<Params<'p, 'a>>,
        mut f: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<std::vec::IntoIter<Result<T>>>
    where
        'a: 'p,
    {
        let mut out = Vec::new();
        self.for_each(params, |r| {
            out.push(f(r));
            Ok(())
        })?;
        Ok(out.into_iter())
    }

    /// Runs `f` on every row as it arrives; stops at its first error.
    pub fn for_each<'p, 'a>(
        &mut self,
        params: impl Into<Params<'p, 'a>>,
        mut f: impl FnMut(&Row<'_>) -> Result<()>,
    ) -> Result<()>
    where
        'a: 'p,
    {
        let params = params.into();
        match self {
            Stmt::Lite(s) => {
                s.clear_bindings();
                lite_bind(s, &params)?;
                let mut rows = s.raw_query();
                while let Some(r) = rows.next()? {
                    f(&Row::Lite(r))?;
                }
                Ok(())
            }
            Stmt::Pg(pg, stmt, names) => {
                let args = pg_args(&params, names)?;
                let mut pg = pg.borrow_mut();
                let client = pg.client();
                let rows = off_runtime(|| client.query(&*stmt, &args))?;
                for r in &rows {
                    f(&Row::Pg(r))?;
                }
                Ok(())
            }
        }
    }

    pub fn query_row<'p, 'a, T>(
        &mut self,
        params: impl Into<Params<'p, 'a>>,
        f: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<T>
    where
        'a: 'p,
    {
        let mut f = Some(f);
        let mut out = None;
        self.for_each(params, |r| {
            if let Some(f) = f.take() {
                out = Some(f(r)?);
            }
            Ok(())
        })?;
        out.ok_or(SqlError::NoRows)
    }

    /// The rows, read one at a time with [`Rows::next`].
    pub fn query<'p, 'a>(&mut self, params: impl Into<Params<'p, 'a>>) -> Result<Rows<'_>>
    where
        'a: 'p,
    {
        let params = params.into();
        match self {
            Stmt::Lite(s) => {
                s.clear_bindings();
                lite_bind(s, &params)?;
                Ok(Rows::Lite(s.raw_query()))
            }
            Stmt::Pg(pg, stmt, names) => {
                let args = pg_args(&params, names)?;
                let mut pg = pg.borrow_mut();
                let client = pg.client();
                let rows = off_runtime(|| client.query(&*stmt, &args))?;
                Ok(Rows::Pg(rows.into_iter(), None))
            }
        }
    }
}

/// The rows of a query.
pub enum Rows<'s> {
    Lite(rusqlite::Rows<'s>),
    Pg(std::vec::IntoIter<postgres::Row>, Option<postgres::Row>),
}

impl Rows<'_> {
    /// The next row, `None` after the last.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Row<'_>>> {
        match self {
            Rows::Lite(rows) => Ok(rows.next()?.map(Row::Lite)),
            Rows::Pg(rows, current) => {
                *current = rows.next();
                Ok(current.as_ref().map(Row::Pg))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_numbered_and_literals_stay() {
        let (sql, names) =
            translate("SELECT ?1, ?, ':x', \"?\", a::bigint, :owner, :day, :owner -- ?9\nFROM t");
        assert_eq!(
            sql,
            "SELECT $1, $1, ':x', \"?\", a::bigint, $1, $2, $1 -- ?9\nFROM t"
        );
        assert_eq!(names, [":owner", ":day"]);
    }
}
