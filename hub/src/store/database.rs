//! Which database the hub uses: a SQLite file (the default, `<data-dir>/hub.db`) or a
//! PostgreSQL server, so that several hubs can share one registry.
//!
//! Written as a URL in flags, the environment and the config file:
//! `postgres://user:password@host:port/db` (or `postgresql://`), `sqlite://PATH`.

use std::{
    path::{Path, PathBuf},
    str::FromStr,
};

use sqlx::postgres::PgConnectOptions;

/// A database the hub can open.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file, created and migrated on first use.
    Sqlite(PathBuf),
    /// A PostgreSQL database (the URL, credentials included); it must exist, the hub creates
    /// and migrates its tables.
    Postgres(String),
}

impl Database {
    /// The default database: `hub.db` in `data_dir`.
    pub fn in_data_dir(data_dir: &Path) -> Self {
        Self::Sqlite(super::database_path(data_dir))
    }

    /// The connection options of a PostgreSQL URL (checked when the URL was parsed).
    pub(crate) fn postgres_options(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
        PgConnectOptions::from_str(url)
    }

    /// The PostgreSQL URL, when this is one (tests hand it on to a CLI child).
    pub fn postgres_url(&self) -> Option<&str> {
        match self {
            Self::Sqlite(_) => None,
            Self::Postgres(url) => Some(url),
        }
    }
}

impl FromStr for Database {
    type Err = String;

    /// `postgres://…`/`postgresql://…` (checked by sqlx's own parser, so that a typo stops
    /// the hub at start rather than at its first query), `sqlite://PATH` or `sqlite:PATH`.
    /// Error messages never repeat the URL: it may hold a password.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Self::postgres_options(s)
                .map_err(|e| format!("invalid PostgreSQL URL ({e}); expected postgres://user:password@host:port/database"))?;
            return Ok(Self::Postgres(s.to_owned()));
        }
        if let Some(path) = s
            .strip_prefix("sqlite://")
            .or_else(|| s.strip_prefix("sqlite:"))
        {
            if path.is_empty() || path.contains('?') {
                return Err(format!(
                    "{s:?}: expected sqlite://PATH (a file path, no options), e.g. sqlite:///var/lib/mc-hub/hub.db"
                ));
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        Err(
            "expected postgres://user:password@host:port/database or sqlite://PATH (the scheme is missing or unknown)"
                .into(),
        )
    }
}

/// The URL with its password masked: what logs and error messages show.
impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            Self::Postgres(url) => f.write_str(&mask_password(url)),
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Database({self})")
    }
}

/// `scheme://user:secret@host/db` → `scheme://user:***@host/db`.
fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// `text` with the password of every PostgreSQL URL in it masked (error messages that quote
/// a config line).
pub(crate) fn redact_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = ["postgres://", "postgresql://"]
        .iter()
        .filter_map(|scheme| rest.find(scheme))
        .min()
    {
        out.push_str(&rest[..start]);
        let url_len = rest[start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`'))
            .unwrap_or(rest.len() - start);
        out.push_str(&mask_password(&rest[start..start + url_len]));
        rest = &rest[start + url_len..];
    }
    out.push_str(rest);
    out
}

impl serde::Serialize for Database {
    /// The full URL (a config file written back must still work).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Sqlite(path) => s.collect_str(&format_args!("sqlite://{}", path.display())),
            Self::Postgres(url) => s.serialize_str(url),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Database {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_passwords_never_show() {
        let pg: Database = "postgres://hub:s3cret@db.example:5433/mc".parse().unwrap();
        assert_eq!(
            pg.postgres_url(),
            Some("postgres://hub:s3cret@db.example:5433/mc")
        );
        assert_eq!(pg.to_string(), "postgres://hub:***@db.example:5433/mc");
        assert!(!format!("{pg:?}").contains("s3cret"));
        let pg: Database = "postgresql://hub@localhost/mc".parse().unwrap();
        assert_eq!(pg.to_string(), "postgresql://hub@localhost/mc");
        assert_eq!(
            redact_passwords("1 | database = \"postgres://a:b@h/d\" and postgresql://c:d@e"),
            "1 | database = \"postgres://a:***@h/d\" and postgresql://c:***@e"
        );

        assert_eq!(
            "sqlite:///var/lib/hub.db".parse::<Database>().unwrap(),
            Database::Sqlite("/var/lib/hub.db".into())
        );
        assert_eq!(
            "sqlite:data/hub.db".parse::<Database>().unwrap(),
            Database::Sqlite("data/hub.db".into())
        );
        for bad in [
            "mysql://x@y/z",
            "/var/lib/hub.db",
            "sqlite://",
            "sqlite://a.db?mode=ro",
            "postgres://hub:pw@host:notaport/db",
        ] {
            let e = bad.parse::<Database>().unwrap_err();
            assert!(!e.contains("pw@"), "{bad}: {e}");
            assert!(e.contains("expected"), "{bad}: {e}");
        }
    }
}
