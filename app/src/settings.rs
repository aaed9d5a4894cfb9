//! The settings panel of one conversation: system prompt, temperature,
//! top_p, top_k, max tokens and context size. An empty field falls back to
//! the model's preset (its Modelfile), then to the server's defaults; the
//! panel shows which value that is and where it comes from. Saved with the
//! conversation.

use crate::api::{ModelPreset, ModelPromptCost, ModelSummary, SamplingDefaults};
use crate::chats::ChatSettings;
use crate::context_size::ContextPicker;
use crate::i18n::{tr, use_lang, Lang};
use leptos::prelude::*;

/// Where an empty field's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Fallback {
    /// The model's preset sets it.
    Preset(String),
    /// The server's default.
    Server(String),
}

impl Fallback {
    /// `0.7 (model preset)`, `0 (server default)`.
    pub fn describe(&self, lang: Lang) -> String {
        let t = lang.t();
        match self {
            Fallback::Preset(v) => (t.from_preset)(v),
            Fallback::Server(v) => (t.from_server)(v),
        }
    }
}

/// The fallback of each field: the preset's value, else the server's.
pub fn fallback<T: ToString>(preset: Option<T>, server: T) -> Fallback {
    match preset {
        Some(v) => Fallback::Preset(v.to_string()),
        None => Fallback::Server(server.to_string()),
    }
}

/// A number field's text as a setting: empty is `None` (fall back), a
/// number in range is `Some`, anything else is an error.
pub fn parse_field<T: std::str::FromStr + PartialOrd>(
    text: &str,
    min: T,
    max: T,
) -> Result<Option<T>, ()> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    match text.replace(',', ".").parse::<T>() {
        Ok(v) if v >= min && v <= max => Ok(Some(v)),
        _ => Err(()),
    }
}

/// Everything the panel shows and edits.
#[derive(Clone, Copy)]
pub struct SettingsProps {
    /// The chat's own settings.
    pub settings: RwSignal<ChatSettings>,
    /// The chat's context size.
    pub num_ctx: RwSignal<Option<usize>>,
    /// The installed models.
    pub models: RwSignal<Vec<ModelSummary>>,
    /// The chat's model.
    pub model: RwSignal<String>,
    /// The server's default context size.
    pub default_num_ctx: RwSignal<usize>,
    /// The server's sampling defaults.
    pub defaults: RwSignal<SamplingDefaults>,
    /// Measured prompt costs.
    pub costs: RwSignal<Vec<ModelPromptCost>>,
    /// Whether the panel is open.
    pub open: RwSignal<bool>,
    /// The chat's title and creation date, for the heading.
    pub title: Signal<String>,
    /// When the chat was created (ms since 1970; 0: not saved yet).
    pub created: Signal<f64>,
}

/// The settings panel.
#[component]
pub fn SettingsPanel(props: SettingsProps, children: Children) -> impl IntoView {
    let lang = use_lang();
    let SettingsProps {
        settings,
        num_ctx,
        models,
        model,
        default_num_ctx,
        defaults,
        costs,
        open,
        title,
        created,
    } = props;
    let preset = Signal::derive(move || {
        let name = model.get();
        models.with(|l| {
            l.iter()
                .find(|m| m.name == name)
                .map(|m| m.preset.clone())
                .unwrap_or_default()
        })
    });
    let system_fallback = move || {
        let l = lang.get();
        match preset.with(|p| p.sampling.system.clone()) {
            Some(s) => Fallback::Preset(s).describe(l),
            None => Fallback::Server(l.t().no_system_prompt.to_string()).describe(l),
        }
    };
    view! {
        <aside class="settings" class:open=move || open.get() data-testid="settings-panel"
            aria-label=tr(lang, |t| t.settings) hidden=move || !open.get()>
            <div class="settings-head">
                <h2>{move || (lang.get().t().settings_title)(&title.get())}</h2>
                <button type="button" class="icon" aria-label=tr(lang, |t| t.close)
                    title=tr(lang, |t| t.close) on:click=move |_| open.set(false)>"✕"</button>
            </div>
            {move || {
                let ms = created.get();
                (ms > 0.0).then(|| view! { <p class="settings-date">{(lang.get().t().created)(&format_date(ms, lang.get()))}</p> })
            }}
            <p class="settings-note">{tr(lang, |t| t.settings_note)}</p>
            <label class="field">
                <span class="field-name">{tr(lang, |t| t.system_prompt)}</span>
                <textarea data-testid="system-prompt" rows="4"
                    placeholder=system_fallback
                    prop:value=move || settings.with(|s| s.system.clone().unwrap_or_default())
                    on:input=move |ev| {
                        let text = event_target_value(&ev);
                        settings.update(|s| s.system = (!text.trim().is_empty()).then_some(text));
                    }></textarea>
                <small class="fallback">{move || {
                    let l = lang.get();
                    if settings.with(|s| s.system.is_some()) {
                        (l.t().instead_of)(&system_fallback())
                    } else {
                        system_fallback()
                    }
                }}</small>
            </label>
            {number_field(NumberField {
                testid: "temperature",
                name: |t| t.temperature,
                step: "0.05",
                min: 0.0,
                max: 2.0,
                get: move || settings.with(|s| s.temperature),
                set: move |v| settings.update(|s| s.temperature = v),
                fallback: move || fallback(preset.with(|p| p.sampling.temperature), defaults.with(|d| d.temperature)),
            })}
            {number_field(NumberField {
                testid: "top-p",
                name: |t| t.top_p,
                step: "0.05",
                min: 0.0,
                max: 1.0,
                get: move || settings.with(|s| s.top_p),
                set: move |v| settings.update(|s| s.top_p = v),
                fallback: move || fallback(preset.with(|p| p.sampling.top_p), defaults.with(|d| d.top_p)),
            })}
            {number_field(NumberField {
                testid: "top-k",
                name: |t| t.top_k,
                step: "1",
                min: 0usize,
                max: 100_000usize,
                get: move || settings.with(|s| s.top_k),
                set: move |v| settings.update(|s| s.top_k = v),
                fallback: move || fallback(preset.with(|p| p.sampling.top_k), defaults.with(|d| d.top_k)),
            })}
            {number_field(NumberField {
                testid: "max-tokens",
                name: |t| t.max_tokens,
                step: "1",
                min: 1usize,
                max: 1_000_000usize,
                get: move || settings.with(|s| s.max_tokens),
                set: move |v| settings.update(|s| s.max_tokens = v),
                fallback: move || fallback(preset.with(|p| p.sampling.max_tokens), defaults.with(|d| d.max_tokens)),
            })}
            <ContextPicker models=models model=model chosen=num_ctx server_default=default_num_ctx costs=costs preset=Signal::derive(move || preset.with(|p: &ModelPreset| p.num_ctx))/>
            {children()}
            <button type="button" class="msg-button clear-settings"
                on:click=move |_| { settings.set(ChatSettings::default()); num_ctx.set(None); }>
                {tr(lang, |t| t.clear_settings)}
            </button>
        </aside>
    }
}

/// One number field of the panel.
struct NumberField<T, G, S, F> {
    testid: &'static str,
    name: fn(&'static crate::i18n::Text) -> &'static str,
    step: &'static str,
    min: T,
    max: T,
    get: G,
    set: S,
    fallback: F,
}

fn number_field<T, G, S, F>(f: NumberField<T, G, S, F>) -> impl IntoView
where
    T: std::str::FromStr + PartialOrd + ToString + Copy + Send + Sync + 'static,
    G: Fn() -> Option<T> + Copy + Send + Sync + 'static,
    S: Fn(Option<T>) + Copy + Send + Sync + 'static,
    F: Fn() -> Fallback + Copy + Send + Sync + 'static,
{
    let lang = use_lang();
    let NumberField {
        testid,
        name,
        step,
        min,
        max,
        get,
        set,
        fallback,
    } = f;
    let invalid = RwSignal::new(false);
    let hint_id = format!("{testid}-hint");
    view! {
        <label class="field">
            <span class="field-name">{move || name(lang.get().t())}</span>
            <input type="number" inputmode="decimal" data-testid=testid step=step
                min=min.to_string() max=max.to_string()
                aria-describedby=hint_id.clone()
                aria-invalid=move || invalid.get().to_string()
                placeholder=move || fallback().describe(lang.get())
                prop:value=move || get().map(|v| v.to_string()).unwrap_or_default()
                on:input=move |ev| match parse_field(&event_target_value(&ev), min, max) {
                    Ok(v) => { invalid.set(false); set(v); }
                    Err(()) => invalid.set(true),
                }/>
            <small class="fallback" id=hint_id>
                {move || {
                    let l = lang.get();
                    if invalid.get() {
                        (l.t().invalid_number)(name(l.t()))
                    } else if get().is_some() {
                        (l.t().instead_of)(&fallback().describe(l))
                    } else {
                        fallback().describe(l)
                    }
                }}
            </small>
        </label>
    }
}

/// A date and time in the page's language (the browser's clock and time
/// zone; the server renders none).
pub fn format_date(ms: f64, lang: Lang) -> String {
    #[cfg(feature = "hydrate")]
    {
        crate::client::locale_date(ms, lang.locale())
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = (ms, lang);
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_fields_fall_back_to_the_preset_then_the_server() {
        assert_eq!(fallback(Some(0.7), 0.0), Fallback::Preset("0.7".into()));
        assert_eq!(fallback(None, 40usize), Fallback::Server("40".into()));
        assert_eq!(
            fallback(Some(0.7), 0.0).describe(Lang::En),
            "0.7 (model preset)"
        );
        assert_eq!(
            fallback::<f64>(None, 0.0).describe(Lang::Ja),
            "0（サーバーの既定値）"
        );
    }

    #[test]
    fn number_fields_take_numbers_in_range_or_nothing() {
        assert_eq!(parse_field("", 0.0, 2.0), Ok(None));
        assert_eq!(parse_field(" 0.3 ", 0.0, 2.0), Ok(Some(0.3)));
        assert_eq!(parse_field("0,5", 0.0, 2.0), Ok(Some(0.5)));
        assert_eq!(parse_field("3", 0.0, 2.0), Err(()));
        assert_eq!(parse_field("abc", 0.0, 2.0), Err(()));
        assert_eq!(parse_field("40", 0usize, 100usize), Ok(Some(40)));
        assert_eq!(parse_field("-1", 0usize, 100usize), Err(()));
    }
}
