//! Socket.IO room names: how events are targeted. A socket joins its user's room, the admins'
//! room if its user is an admin, and the room of the page it named in its handshake.

/// Every admin socket.
pub const ADMINS: &str = "admins";

/// The pages a client may name in its handshake (`auth: {page}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Page {
    /// The modules page (every user).
    Modules,
    /// The admin page (admins only).
    Admin,
}

impl Page {
    /// Parses a page name; unknown names are refused.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "modules" => Some(Self::Modules),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    /// The page name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Modules => "modules",
            Self::Admin => "admin",
        }
    }

    /// The room of this page's sockets.
    pub fn room(self) -> &'static str {
        match self {
            Self::Modules => "page:modules",
            Self::Admin => "page:admin",
        }
    }
}

/// The room of one user's sockets (all tabs).
pub fn user(user_id: i64) -> String {
    format!("user:{user_id}")
}

/// The room of the sockets opened with one login session (by the SHA-256 of its token), so that
/// ending the session can disconnect exactly them.
pub fn session(token_hash: &str) -> String {
    format!("session:{token_hash}")
}
