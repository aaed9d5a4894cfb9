//! The page's preferences that outlive a chat: the theme (system, light,
//! dark) and the language. Both are kept in localStorage and in a cookie,
//! so the server renders the first paint the way the person chose.

use crate::i18n::{Lang, Text};

/// localStorage key and cookie name of the chosen theme.
pub const THEME_KEY: &str = "kinko_theme";

/// The colour theme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Theme {
    /// Follow the system's light or dark.
    #[default]
    System,
    /// Always light.
    Light,
    /// Always dark.
    Dark,
}

impl Theme {
    /// Every theme, in the order the picker lists them.
    pub const ALL: [Theme; 3] = [Theme::System, Theme::Light, Theme::Dark];

    /// The value stored and put on `<html data-theme>` (`system`: none).
    pub fn code(self) -> &'static str {
        match self {
            Theme::System => "system",
            Theme::Light => "light",
            Theme::Dark => "dark",
        }
    }

    /// The theme of a stored value.
    pub fn from_code(code: &str) -> Option<Theme> {
        Theme::ALL.into_iter().find(|t| t.code() == code.trim())
    }

    /// Its name in the picker.
    pub fn label(self, t: &Text) -> &'static str {
        match self {
            Theme::System => t.theme_system,
            Theme::Light => t.theme_light,
            Theme::Dark => t.theme_dark,
        }
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == name).then(|| v.trim())
    })
}

/// What the server renders with: the language and theme from the cookies
/// the page set, else the language from `Accept-Language`.
pub fn from_request(cookies: &str, accept_language: &str) -> (Lang, Theme) {
    let lang = cookie(cookies, crate::i18n::LANG_KEY)
        .and_then(Lang::from_tag)
        .unwrap_or_else(|| Lang::from_accept_language(accept_language));
    let theme = cookie(cookies, THEME_KEY)
        .and_then(Theme::from_code)
        .unwrap_or_default();
    (lang, theme)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_paint_follows_the_cookies_then_the_browser() {
        assert_eq!(
            from_request("a=1; kinko_lang=ja; kinko_theme=dark", "en"),
            (Lang::Ja, Theme::Dark)
        );
        assert_eq!(
            from_request("", "ja-JP,ja;q=0.9"),
            (Lang::Ja, Theme::System)
        );
        assert_eq!(
            from_request("kinko_lang=xx; kinko_theme=neon", "en-US"),
            (Lang::En, Theme::System)
        );
        assert_eq!(Theme::from_code("light"), Some(Theme::Light));
    }
}
