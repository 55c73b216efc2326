//! Module credentials and the credentials file format: one `ID PASSWORD` per line, blank lines
//! and `#` comments allowed (the hub's provisioning tools write the same format).

use mc_protocol::ModuleId;

use crate::error::CredentialsError;

/// Who a simulated module is and how it proves it to the broker (MQTT username = client id =
/// module id, password = the module's token).
#[derive(Clone, PartialEq, Eq)]
pub struct ModuleCredentials {
    /// The module id; also its MQTT client id and username.
    pub id: ModuleId,
    /// The module's token, sent as the MQTT password.
    pub password: String,
}

impl ModuleCredentials {
    /// Credentials from a validated id and a password.
    pub fn new(id: ModuleId, password: impl Into<String>) -> Self {
        Self {
            id,
            password: password.into(),
        }
    }
}

// Hand-written so that passwords never end up in logs.
impl std::fmt::Debug for ModuleCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleCredentials")
            .field("id", &self.id)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Parses a credentials file. Refuses malformed lines, invalid ids and duplicate ids, naming
/// the line.
pub fn parse(text: &str) -> Result<Vec<ModuleCredentials>, CredentialsError> {
    let mut out: Vec<ModuleCredentials> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let mut fields = content.split_whitespace();
        let (Some(id), Some(password), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(CredentialsError::Malformed { line });
        };
        let id =
            ModuleId::new(id).map_err(|source| CredentialsError::InvalidId { line, source })?;
        if out.iter().any(|c| c.id == id) {
            return Err(CredentialsError::Duplicate { line, id });
        }
        out.push(ModuleCredentials::new(id, password));
    }
    Ok(out)
}

/// The first `n` credentials, or an error saying how many there are.
pub fn take_first(
    mut all: Vec<ModuleCredentials>,
    n: usize,
) -> Result<Vec<ModuleCredentials>, CredentialsError> {
    if all.len() < n {
        return Err(CredentialsError::NotEnough {
            wanted: n,
            found: all.len(),
        });
    }
    all.truncate(n);
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_comments_and_blanks() {
        let text = "# station modules\n\nMC-1001-STN  s3cret\n  MC-1002-STN\ttok2 # spare\n";
        let creds = parse(text).unwrap();
        assert_eq!(creds.len(), 2);
        assert_eq!(creds[0].id.as_str(), "MC-1001-STN");
        assert_eq!(creds[0].password, "s3cret");
        assert_eq!(creds[1].id.as_str(), "MC-1002-STN");
        assert_eq!(creds[1].password, "tok2");
    }

    #[test]
    fn refuses_bad_lines_with_their_number() {
        assert_eq!(
            parse("MC-1\n"),
            Err(CredentialsError::Malformed { line: 1 })
        );
        assert_eq!(
            parse("\nMC-1001 a b\n"),
            Err(CredentialsError::Malformed { line: 2 })
        );
        assert!(matches!(
            parse("MC/1 pw\n"),
            Err(CredentialsError::InvalidId { line: 1, .. })
        ));
        assert!(matches!(
            parse("MC-1 a\nMC-1 b\n"),
            Err(CredentialsError::Duplicate { line: 2, .. })
        ));
    }

    #[test]
    fn take_first_needs_enough() {
        let creds = parse("AAA 1\nBBB 2\nCCC 3\n").unwrap();
        assert_eq!(take_first(creds.clone(), 2).unwrap().len(), 2);
        assert_eq!(
            take_first(creds, 5),
            Err(CredentialsError::NotEnough {
                wanted: 5,
                found: 3
            })
        );
    }

    #[test]
    fn debug_hides_the_password() {
        let c = ModuleCredentials::new(ModuleId::new("MC-1").unwrap(), "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
