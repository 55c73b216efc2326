//! Who may see and do what: the one place that decides. Web handlers ask these functions; the
//! realtime layer routes module events to exactly [`module_audience`] through rooms, so that
//! what a socket receives and what the API shows follow the same rule.
//!
//! | subject | may |
//! |---|---|
//! | admin | see and manage every module and user, read stats and pending modules, open the admin page |
//! | user | see and manage the modules they own (not reassign them), edit their own profile |
//! | anyone else | nothing (401); a module one may not see is answered as missing (404) |

use crate::{
    realtime::rooms::Page,
    store::{ModuleRecord, User},
};

/// Whether `user` may see `module` (its data, its events) and manage it (rename, retype,
/// commands, token, removal).
pub fn can_manage_module(user: &User, module: &ModuleRecord) -> bool {
    user.is_admin || module.owner_id == Some(user.id)
}

/// Whether `user` may give a module to `owner` (`None`: nobody, admins only).
pub fn can_assign_owner(user: &User, owner: Option<i64>) -> bool {
    user.is_admin || owner == Some(user.id)
}

/// Whether `user` may manage users, read stats and pending modules.
pub fn is_admin(user: &User) -> bool {
    user.is_admin
}

/// Whether `user` may open `page` in the dashboard.
pub fn can_open_page(user: &User, page: Page) -> bool {
    page != Page::Admin || user.is_admin
}

/// Who receives the events of a module owned by `owner`: that user (all tabs) and admins.
/// Returned as room names for the realtime layer.
pub fn module_audience(owner: Option<i64>) -> Vec<String> {
    let mut rooms = vec![crate::realtime::rooms::ADMINS.to_owned()];
    if let Some(user_id) = owner {
        rooms.push(crate::realtime::rooms::user(user_id));
    }
    rooms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: i64, is_admin: bool) -> User {
        User {
            id,
            email: format!("u{id}@x.io"),
            name: "u".into(),
            is_admin,
            disabled: false,
        }
    }

    #[test]
    fn owners_and_admins_only() {
        let module = |owner| ModuleRecord::for_tests("MC-1", owner);
        assert!(can_manage_module(&user(1, false), &module(Some(1))));
        assert!(!can_manage_module(&user(2, false), &module(Some(1))));
        assert!(!can_manage_module(&user(2, false), &module(None)));
        assert!(can_manage_module(&user(3, true), &module(None)));
        assert!(can_assign_owner(&user(1, false), Some(1)));
        assert!(!can_assign_owner(&user(1, false), Some(2)));
        assert!(!can_assign_owner(&user(1, false), None));
        assert!(can_assign_owner(&user(3, true), None));
        assert!(!can_open_page(&user(1, false), Page::Admin));
        assert!(can_open_page(&user(1, false), Page::Modules));
        assert_eq!(
            module_audience(Some(7)),
            vec!["admins".to_owned(), "user:7".to_owned()]
        );
        assert_eq!(module_audience(None), vec!["admins".to_owned()]);
    }
}
