//! Model output as markdown (CommonMark with GFM tables, strikethrough and
//! task lists, parsed by pulldown-cmark), rendered to HTML that is safe by
//! construction: every piece of the model's text goes through HTML escaping,
//! raw HTML in the output is shown as text, links are live only for
//! `http:`, `https:` and `mailto:` (and relative ones), images never load
//! (they become links), and the only markup is what this module writes.
//!
//! While an answer streams, [`BlockSplitter`] keeps the top-level blocks
//! that are finished and re-parses only the last, unfinished one.

use crate::highlight::{escape, highlight};
use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag, TagEnd};
use std::fmt::Write as _;

fn options() -> Options {
    Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS
}

/// Whether a link target may be live: no scheme (relative, `#anchor`) or
/// one of `http`, `https`, `mailto`. Browsers ignore tabs, newlines and
/// leading controls in URLs, so those are removed before looking.
pub fn safe_url(url: &str) -> bool {
    let cleaned: String = url
        .chars()
        .filter(|c| !c.is_ascii_whitespace() && !c.is_control())
        .collect::<String>()
        .to_ascii_lowercase();
    let scheme_end = cleaned.find(|c: char| matches!(c, ':' | '/' | '?' | '#'));
    match scheme_end {
        Some(i) if cleaned[i..].starts_with(':') => {
            matches!(&cleaned[..i], "http" | "https" | "mailto")
        }
        _ => true,
    }
}

/// The language name of a fence, cleaned for use as a label and a class.
fn fence_language(info: &str) -> String {
    info.split(|c: char| c.is_whitespace() || c == ',' || c == '{')
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '_' | '#' | '.'))
        .take(24)
        .collect()
}

thread_local! {
    /// The code blocks' Copy button: its text and its label, in the page's
    /// language (blocks rendered before a switch keep theirs).
    static COPY_LABELS: std::cell::Cell<(&'static str, &'static str)> =
        const { std::cell::Cell::new(("Copy", "Copy code")) };
}

/// Set the code blocks' Copy button text and label.
pub fn set_copy_labels(text: &'static str, label: &'static str) {
    COPY_LABELS.with(|c| c.set((text, label)));
}

fn code_block(language: &str, code: &str) -> String {
    let (copy_text, copy_label) = COPY_LABELS.with(|c| c.get());
    let mut out = String::with_capacity(code.len() * 2 + 200);
    out.push_str("<div class=\"code-block\"><div class=\"code-head\"><span class=\"code-lang\">");
    escape(
        &mut out,
        if language.is_empty() {
            "text"
        } else {
            language
        },
    );
    out.push_str(
        "</span><button type=\"button\" class=\"copy-code\" data-testid=\"copy-code\" aria-label=\"",
    );
    escape(&mut out, copy_label);
    out.push_str("\">");
    escape(&mut out, copy_text);
    out.push_str("</button></div><pre><code");
    if !language.is_empty() {
        let _ = write!(out, " class=\"language-{language}\"");
    }
    out.push('>');
    out.push_str(&highlight(language, code));
    out.push_str("</code></pre></div>");
    out
}

fn link_open(url: &str, class: &str) -> String {
    let mut out = String::from("<a href=\"");
    escape(&mut out, url);
    let _ = write!(
        out,
        "\" class=\"{class}\" rel=\"noopener noreferrer nofollow\" target=\"_blank\">"
    );
    out
}

/// Markdown to safe HTML.
pub fn render(markdown: &str) -> String {
    let mut events: Vec<Event<'_>> = Vec::new();
    // Inside a code block: its language and text so far.
    let mut code: Option<(String, String)> = None;
    // Links and images whose markup was left out, so their end is too.
    let mut dropped: Vec<bool> = Vec::new();
    for event in Parser::new_ext(markdown, options()) {
        if let Some((_, text)) = code.as_mut() {
            match event {
                Event::Text(t) => text.push_str(&t),
                Event::End(TagEnd::CodeBlock) => {
                    if let Some((language, text)) = code.take() {
                        events.push(Event::Html(code_block(&language, &text).into()));
                    }
                }
                _ => {}
            }
            continue;
        }
        match event {
            Event::Start(Tag::CodeBlock(kind)) => {
                let language = match kind {
                    CodeBlockKind::Fenced(info) => fence_language(&info),
                    CodeBlockKind::Indented => String::new(),
                };
                code = Some((language, String::new()));
            }
            // Raw HTML is the model's text, shown as such.
            Event::Html(t) | Event::InlineHtml(t) => events.push(Event::Text(t)),
            Event::Start(Tag::HtmlBlock) => {
                events.push(Event::Html("<p class=\"raw-html\">".into()))
            }
            Event::End(TagEnd::HtmlBlock) => events.push(Event::Html("</p>".into())),
            Event::Start(Tag::Link { dest_url, .. }) => {
                let live = safe_url(&dest_url);
                dropped.push(!live);
                if live {
                    events.push(Event::Html(link_open(&dest_url, "link").into()));
                }
            }
            Event::Start(Tag::Image { dest_url, .. }) => {
                let live = safe_url(&dest_url);
                dropped.push(!live);
                events.push(Event::Html(
                    if live {
                        link_open(&dest_url, "image-link")
                    } else {
                        "<span class=\"image-link\">".into()
                    }
                    .into(),
                ));
                events.push(Event::Text("Image: ".into()));
            }
            Event::End(TagEnd::Link) => {
                if !dropped.pop().unwrap_or(true) {
                    events.push(Event::Html("</a>".into()));
                }
            }
            Event::End(TagEnd::Image) => {
                let close = if dropped.pop().unwrap_or(true) {
                    "</span>"
                } else {
                    "</a>"
                };
                events.push(Event::Html(close.into()));
            }
            other => events.push(other),
        }
    }
    if let Some((language, text)) = code.take() {
        events.push(Event::Html(code_block(&language, &text).into()));
    }
    let mut out = String::with_capacity(markdown.len() * 3 / 2 + 16);
    pulldown_cmark::html::push_html(&mut out, events.into_iter());
    out
}

/// Where each top-level block of `markdown` starts (byte offsets).
fn block_starts(markdown: &str) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut depth = 0usize;
    for (event, range) in Parser::new_ext(markdown, options()).into_offset_iter() {
        match event {
            Event::Start(_) => {
                if depth == 0 {
                    starts.push(range.start);
                }
                depth += 1;
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Rule | Event::Html(_) | Event::Text(_) if depth == 0 => starts.push(range.start),
            _ => {}
        }
    }
    starts
}

/// Whether the line before the one where `at` lies is blank.
fn blank_line_before(text: &str, at: usize) -> bool {
    let before = text[..at].trim_end_matches([' ', '\t']);
    let Some(before) = before.strip_suffix('\n') else {
        return false;
    };
    let previous_line = before.rsplit('\n').next().unwrap_or(before);
    previous_line.trim().is_empty()
}

/// The rendering of a growing answer, block by block.
#[derive(Debug, Default, Clone)]
pub struct BlockSplitter {
    /// Bytes of the text already rendered as finished blocks.
    done: usize,
}

/// What changed after [`BlockSplitter::advance`].
#[derive(Debug, Default, PartialEq)]
pub struct Advance {
    /// Blocks that just finished, as HTML, to append after earlier ones.
    pub finished: Vec<String>,
    /// The unfinished last block, as HTML (empty once the text is final).
    pub tail: String,
    /// The text no longer continues what was rendered (it was replaced):
    /// drop every block shown and take `finished` as the whole.
    pub reset: bool,
}

impl BlockSplitter {
    /// Render what is new in `text`, which extends the text of the last
    /// call; `last` says no more will come. Only the part after the
    /// finished blocks is parsed.
    pub fn advance(&mut self, text: &str, last: bool) -> Advance {
        let mut reset = false;
        if self.done > text.len() || !text.is_char_boundary(self.done) {
            self.done = 0;
            reset = true;
        }
        let rest = &text[self.done..];
        if last {
            self.done = text.len();
            let finished = if rest.trim().is_empty() {
                Vec::new()
            } else {
                vec![render(rest)]
            };
            return Advance {
                finished,
                tail: String::new(),
                reset,
            };
        }
        let mut finished = Vec::new();
        let mut tail_from = 0;
        // A block is finished once a later block began after a blank line:
        // without the blank line the later text could still join it (a
        // table row, a setext underline, a list item).
        let cut = block_starts(rest)
            .into_iter()
            .skip(1)
            .rev()
            .find(|&start| blank_line_before(rest, start));
        if let Some(cut) = cut {
            finished.push(render(&rest[..cut]));
            tail_from = cut;
        }
        self.done += tail_from;
        Advance {
            finished,
            tail: render(&rest[tail_from..]),
            reset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commonmark_and_gfm_render() {
        let html = render(
            "# Title\n\n**bold** and ~~gone~~\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n- [x] done\n- [ ] todo\n",
        );
        assert!(html.contains("<h1>Title</h1>"), "{html}");
        assert!(html.contains("<strong>bold</strong>"));
        assert!(html.contains("<del>gone</del>"));
        assert!(html.contains("<table>") && html.contains("<td>2</td>"));
        assert!(html.contains("type=\"checkbox\""));
    }

    #[test]
    fn fenced_code_gets_label_copy_button_and_highlighting() {
        let html = render("```rust\nfn main() { println!(\"<hi>\"); }\n```\n");
        assert!(
            html.contains("<span class=\"code-lang\">rust</span>"),
            "{html}"
        );
        assert!(html.contains("data-testid=\"copy-code\""));
        assert!(html.contains("<span class=\"tk-k\">fn</span>"));
        assert!(html.contains("&lt;hi&gt;"));
        assert!(!html.contains("<hi>"));
        // An open fence (still streaming) renders as code too.
        assert!(render("```py\nx = 1").contains("<span class=\"code-lang\">py</span>"));
        // A hostile info string cannot break out of the class attribute.
        let html = render("```x\"onmouseover=alert(1)\nz\n```");
        assert!(!html.contains("\"onmouseover"), "{html}");
    }

    #[test]
    fn raw_html_is_text_and_bad_links_are_dead() {
        let payloads = [
            "<script>alert(1)</script>",
            "<img src=x onerror=alert(1)>",
            "inline <b onclick=alert(1)>x</b>",
            "[a](javascript:alert(1))",
            "[a](JaVa\tScRiPt:alert(1))",
            "[a](&#106;avascript:alert(1))",
            "[a](data:text/html,<script>alert(1)</script>)",
            "[a](vbscript:msgbox(1))",
            "<javascript:alert(1)>",
            "![x](javascript:alert(1))",
            "[a]: javascript:alert(1)\n\n[a]",
            "<svg onload=alert(1)>",
            "<a href=\"javascript:alert(1)\">x</a>",
        ];
        for p in payloads {
            let html = render(p);
            let lower = html.to_ascii_lowercase();
            assert!(!lower.contains("<script"), "{p} -> {html}");
            assert!(!lower.contains("<img"), "{p} -> {html}");
            assert!(!lower.contains("<svg"), "{p} -> {html}");
            assert!(!lower.contains("<b "), "{p} -> {html}");
            for scheme in ["java", "data", "vbscript", "&#"] {
                assert!(
                    !lower.contains(&format!("<a href=\"{scheme}")),
                    "{p} -> {html}"
                );
            }
            // Every tag is one this module writes.
            for tag in lower.split('<').skip(1) {
                let name: String = tag
                    .trim_start_matches('/')
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                assert!(
                    [
                        "p", "a", "span", "code", "pre", "div", "button", "em", "strong", "ul",
                        "li", "ol"
                    ]
                    .contains(&name.as_str()),
                    "{p} -> {html}"
                );
            }
        }
        assert!(render("<b>x</b>").contains("&lt;b&gt;x&lt;/b&gt;"));
        let html = render("[ok](https://example.com/a?b=\"c\")");
        assert!(
            html.contains("href=\"https://example.com/a?b=&quot;c&quot;\""),
            "{html}"
        );
        assert!(render("![cat](https://x/cat.png)").contains("Image: cat"));
    }

    #[test]
    fn urls_are_judged_by_scheme() {
        assert!(safe_url("https://a.b/c"));
        assert!(safe_url("mailto:x@y"));
        assert!(safe_url("/docs#x"));
        assert!(safe_url("page:1") == false);
        assert!(!safe_url(" javascript:x"));
        assert!(!safe_url("\u{1}javascript:x"));
        assert!(!safe_url("DATA:text/html,x"));
        assert!(safe_url("a/b:c"));
    }

    #[test]
    fn streaming_keeps_finished_blocks_and_matches_a_whole_render() {
        let text = "# One\n\nFirst para.\n\n```rust\nlet x = 1;\n\nlet y = 2;\n```\n\n- a\n- b\n\n| h |\n|---|\n| c |\n\nLast words here.";
        let mut splitter = BlockSplitter::default();
        let mut blocks: Vec<String> = Vec::new();
        let mut parsed_bytes = 0usize;
        let mut end = 0;
        while end < text.len() {
            end = (end + 3).min(text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            let before = splitter.done;
            let step = splitter.advance(&text[..end], false);
            assert!(!step.reset);
            parsed_bytes += end - before;
            blocks.extend(step.finished);
        }
        let last = splitter.advance(text, true);
        blocks.extend(last.finished);
        assert_eq!(last.tail, "");
        // The pieces, joined, are what rendering the whole gives (up to
        // the newlines between blocks).
        let squash = |h: &str| h.replace(">\n<", "><");
        assert_eq!(squash(&blocks.concat()), squash(&render(text)));
        // Finished blocks were not parsed again: far less than the
        // quadratic whole-text re-parse.
        let whole: usize = (1..=text.len().div_ceil(3))
            .map(|i| (i * 3).min(text.len()))
            .sum();
        assert!(parsed_bytes * 3 < whole, "{parsed_bytes} vs {whole}");
        assert!(blocks.len() > 4);
    }

    #[test]
    fn replaced_text_starts_over() {
        let mut s = BlockSplitter::default();
        s.advance("# a\n\nb\n\nc", false);
        let step = s.advance("x", false);
        assert!(step.reset);
        assert_eq!(step.tail, render("x"));
    }
}
