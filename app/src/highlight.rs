//! A small syntax highlighter for fenced code: comments, strings, numbers
//! and keywords of the languages people paste most, as `<span class="tk-…">`
//! around HTML-escaped text. A full grammar crate (syntect, tree-sitter)
//! would not fit the page's bundle budget; this covers what a chat needs.

use std::fmt::Write as _;

struct Lang {
    line_comments: &'static [&'static str],
    block_comment: Option<(&'static str, &'static str)>,
    quotes: &'static [char],
    keywords: &'static [&'static str],
    case_insensitive: bool,
}

const RUST: Lang = Lang {
    line_comments: &["//"],
    block_comment: Some(("/*", "*/")),
    quotes: &['"'],
    keywords: &[
        "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum",
        "extern", "false", "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move",
        "mut", "pub", "ref", "return", "self", "Self", "static", "struct", "super", "trait",
        "true", "type", "unsafe", "use", "where", "while", "Some", "None", "Ok", "Err",
    ],
    case_insensitive: false,
};

const PYTHON: Lang = Lang {
    line_comments: &["#"],
    block_comment: None,
    quotes: &['"', '\''],
    keywords: &[
        "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del",
        "elif", "else", "except", "False", "finally", "for", "from", "global", "if", "import",
        "in", "is", "lambda", "None", "nonlocal", "not", "or", "pass", "raise", "return", "True",
        "try", "while", "with", "yield", "print", "self",
    ],
    case_insensitive: false,
};

const C_LIKE: Lang = Lang {
    line_comments: &["//"],
    block_comment: Some(("/*", "*/")),
    quotes: &['"', '\'', '`'],
    keywords: &[
        "abstract",
        "async",
        "await",
        "auto",
        "bool",
        "break",
        "case",
        "catch",
        "char",
        "class",
        "const",
        "continue",
        "default",
        "defer",
        "delete",
        "do",
        "double",
        "else",
        "enum",
        "export",
        "extends",
        "false",
        "final",
        "float",
        "for",
        "from",
        "func",
        "function",
        "go",
        "if",
        "implements",
        "import",
        "include",
        "int",
        "interface",
        "let",
        "long",
        "map",
        "new",
        "null",
        "nullptr",
        "package",
        "private",
        "protected",
        "public",
        "return",
        "short",
        "static",
        "string",
        "struct",
        "switch",
        "this",
        "throw",
        "true",
        "try",
        "type",
        "typeof",
        "undefined",
        "unsigned",
        "var",
        "void",
        "while",
        "yield",
    ],
    case_insensitive: false,
};

const SHELL: Lang = Lang {
    line_comments: &["#"],
    block_comment: None,
    quotes: &['"', '\''],
    keywords: &[
        "if", "then", "else", "elif", "fi", "for", "while", "until", "do", "done", "case", "esac",
        "function", "in", "return", "export", "local", "echo", "cd", "sudo", "set",
    ],
    case_insensitive: false,
};

const DATA: Lang = Lang {
    line_comments: &["#"],
    block_comment: None,
    quotes: &['"', '\''],
    keywords: &["true", "false", "null", "yes", "no"],
    case_insensitive: false,
};

const SQL: Lang = Lang {
    line_comments: &["--"],
    block_comment: Some(("/*", "*/")),
    quotes: &['\''],
    keywords: &[
        "select", "from", "where", "insert", "into", "values", "update", "set", "delete", "create",
        "table", "drop", "alter", "join", "left", "right", "inner", "outer", "on", "group", "by",
        "order", "having", "limit", "and", "or", "not", "null", "as", "distinct", "primary", "key",
        "index", "union", "with",
    ],
    case_insensitive: true,
};

fn lang(name: &str) -> Option<&'static Lang> {
    Some(match name.to_ascii_lowercase().as_str() {
        "rust" | "rs" => &RUST,
        "python" | "py" => &PYTHON,
        "c" | "h" | "cpp" | "c++" | "cc" | "hpp" | "java" | "kotlin" | "kt" | "go" | "golang"
        | "js" | "javascript" | "jsx" | "ts" | "typescript" | "tsx" | "cs" | "csharp" | "swift"
        | "php" | "scala" | "dart" => &C_LIKE,
        "sh" | "bash" | "shell" | "zsh" | "console" | "fish" => &SHELL,
        "json" | "toml" | "yaml" | "yml" | "ini" => &DATA,
        "sql" => &SQL,
        _ => return None,
    })
}

/// Escape text for HTML element content and attribute values.
pub fn escape(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

fn span(out: &mut String, class: &str, text: &str) {
    let _ = write!(out, "<span class=\"tk-{class}\">");
    escape(out, text);
    out.push_str("</span>");
}

/// `code` as escaped HTML, highlighted when `language` is one it knows.
pub fn highlight(language: &str, code: &str) -> String {
    let mut out = String::with_capacity(code.len() + code.len() / 2);
    let Some(lang) = lang(language) else {
        escape(&mut out, code);
        return out;
    };
    let mut rest = code;
    while let Some(c) = rest.chars().next() {
        // Comments.
        if let Some(start) = lang.line_comments.iter().find(|p| rest.starts_with(**p)) {
            let end = rest.find('\n').unwrap_or(rest.len()).max(start.len());
            span(&mut out, "c", &rest[..end]);
            rest = &rest[end..];
            continue;
        }
        if let Some((open, close)) = lang.block_comment.filter(|(o, _)| rest.starts_with(*o)) {
            let end = rest[open.len()..]
                .find(close)
                .map(|i| open.len() + i + close.len())
                .unwrap_or(rest.len());
            span(&mut out, "c", &rest[..end]);
            rest = &rest[end..];
            continue;
        }
        // Strings, with backslash escapes, ending at the line's end if open.
        if lang.quotes.contains(&c) {
            let mut end = rest.len();
            let mut escaped = false;
            for (i, ch) in rest.char_indices().skip(1) {
                if escaped {
                    escaped = false;
                } else if ch == '\\' {
                    escaped = true;
                } else if ch == c {
                    end = i + ch.len_utf8();
                    break;
                } else if ch == '\n' && c != '`' {
                    end = i;
                    break;
                }
            }
            span(&mut out, "s", &rest[..end]);
            rest = &rest[end..];
            continue;
        }
        // Numbers and words.
        if c.is_ascii_digit() {
            let end = rest
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '.' || ch == '_'))
                .unwrap_or(rest.len());
            span(&mut out, "n", &rest[..end]);
            rest = &rest[end..];
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let end = rest
                .find(|ch: char| !(ch.is_alphanumeric() || ch == '_'))
                .unwrap_or(rest.len());
            let word = &rest[..end];
            let known = if lang.case_insensitive {
                let lower = word.to_ascii_lowercase();
                lang.keywords.contains(&lower.as_str())
            } else {
                lang.keywords.contains(&word)
            };
            if known {
                span(&mut out, "k", word);
            } else {
                escape(&mut out, word);
            }
            rest = &rest[end..];
            continue;
        }
        let mut buf = [0u8; 4];
        escape(&mut out, c.encode_utf8(&mut buf));
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_keywords_strings_comments_and_numbers() {
        let html = highlight("rust", "fn main() { let s = \"a<b\"; // hi\n 42 }");
        assert!(html.contains("<span class=\"tk-k\">fn</span>"));
        assert!(html.contains("<span class=\"tk-k\">let</span>"));
        assert!(html.contains("<span class=\"tk-s\">&quot;a&lt;b&quot;</span>"));
        assert!(html.contains("<span class=\"tk-c\">// hi</span>"));
        assert!(html.contains("<span class=\"tk-n\">42</span>"));
        assert!(html.contains("main"));
    }

    #[test]
    fn unknown_languages_are_only_escaped() {
        assert_eq!(
            highlight("klingon", "<img onerror=x> & 'q'"),
            "&lt;img onerror=x&gt; &amp; &#39;q&#39;"
        );
    }

    #[test]
    fn unterminated_strings_and_comments_stay_inside_the_code() {
        let html = highlight("python", "x = 'open\n# note\ny = \"\"\"\n");
        assert!(html.contains("<span class=\"tk-s\">&#39;open</span>"));
        assert!(html.contains("<span class=\"tk-c\"># note</span>"));
        let html = highlight("c", "/* never closed");
        assert_eq!(html, "<span class=\"tk-c\">/* never closed</span>");
        assert_eq!(
            highlight("sql", "SELECT 1"),
            "<span class=\"tk-k\">SELECT</span> <span class=\"tk-n\">1</span>"
        );
    }

    #[test]
    fn nothing_is_lost_whatever_the_input() {
        for (lang, code) in [
            ("rust", "é\"\\"),
            ("sh", "echo 'it''s' # c"),
            ("json", "{\"a\": [1, true]}"),
        ] {
            let html = highlight(lang, code);
            let text = html
                .split('<')
                .map(|part| part.split_once('>').map(|(_, t)| t).unwrap_or(part))
                .collect::<String>()
                .replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&");
            assert_eq!(text, code);
        }
    }
}
