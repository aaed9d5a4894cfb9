//! The context size of a chat (`num_ctx`): how much of the conversation the
//! model reads each turn. Bigger remembers more and costs more time before
//! the first token; on a CPU the cost grows faster than the size. The picker
//! shows that cost as this machine measured it.

use crate::api::{ModelPromptCost, ModelSummary, PromptCost};
use crate::i18n::{tr, use_lang, Lang};
use leptos::prelude::*;

/// Sizes offered, up to the model's window (which is always offered too).
const SIZES: [usize; 7] = [1024, 2048, 4096, 8192, 16384, 32768, 131072];

/// The sizes to offer for a model with this window.
pub fn sizes_for(model_window: usize) -> Vec<usize> {
    let mut sizes: Vec<usize> = SIZES
        .iter()
        .copied()
        .filter(|&s| s < model_window)
        .collect();
    if model_window > 0 {
        sizes.push(model_window);
    }
    sizes
}

/// The size a chat uses: its own, else the server's default (0: the whole
/// window), never more than the model's window.
pub fn effective(chosen: Option<usize>, server_default: usize, model_window: usize) -> usize {
    match chosen.unwrap_or(server_default) {
        0 => model_window,
        n if model_window > 0 => n.min(model_window),
        n => n,
    }
}

/// The time a `size`-token prompt takes: `≈ 40 s`, or `≥ 40 s` where the
/// estimate is only a lower bound (far past the prompts measured).
pub fn cost_short(cost: &PromptCost, size: usize, lang: Lang) -> String {
    let secs = cost.seconds(size);
    match (cost.is_lower_bound(size), secs < 1.0) {
        (false, true) => lang.seconds(secs),
        (false, false) => format!("≈ {}", lang.seconds(secs)),
        (true, _) => format!("≥ {}", lang.seconds(secs)),
    }
}

/// What a full window of `size` tokens costs, in words.
pub fn cost_text(cost: Option<&PromptCost>, size: usize, lang: Lang) -> String {
    let t = lang.t();
    let n = size.to_string();
    match cost {
        Some(c) if c.is_lower_bound(size) => {
            (t.ctx_cost_lower)(&n, &lang.seconds(c.seconds(size)), &c.longest.to_string())
        }
        Some(c) => (t.ctx_cost)(&n, &lang.seconds(c.seconds(size))),
        None => (t.ctx_cost_unknown)(&n),
    }
}

/// The context-size picker of one chat, with the cost of the size picked.
#[component]
pub fn ContextPicker(
    /// The models, for their windows.
    models: RwSignal<Vec<ModelSummary>>,
    /// The model of the chat.
    model: RwSignal<String>,
    /// The chat's own size (`None`: the server's default).
    chosen: RwSignal<Option<usize>>,
    /// The server's default size.
    server_default: RwSignal<usize>,
    /// Measured prompt costs per model.
    costs: RwSignal<Vec<ModelPromptCost>>,
    /// The model preset's size, used before the server's default.
    preset: Signal<Option<usize>>,
) -> impl IntoView {
    let window = move || {
        models.with(|list| {
            list.iter()
                .find(|m| m.name == model.get())
                .map_or(0, |m| m.context_length)
        })
    };
    let cost = move || costs.with(|c| c.iter().find(|c| c.model == model.get()).map(|c| c.cost));
    let lang = use_lang();
    let size_label = move |size: usize| {
        let l = lang.get();
        let label = (l.t().ctx_tokens)(&size.to_string());
        match cost() {
            Some(c) => format!("{label} · {}", cost_short(&c, size, l)),
            None => label,
        }
    };
    // The default: "4096 tokens (default) · ≈ 2 min".
    let default_label = move |size: usize| {
        let l = lang.get();
        let label = (l.t().ctx_default)(&size.to_string());
        match cost() {
            Some(c) => format!("{label} · {}", cost_short(&c, size, l)),
            None => label,
        }
    };
    view! {
        <label class="field context-picker" title=tr(lang, |t| t.context_size_title)>
            <span class="field-name">{tr(lang, |t| t.context_size)}</span>
            <select
                data-testid="num-ctx"
                on:change=move |ev| chosen.set(event_target_value(&ev).parse::<usize>().ok())
                prop:value=move || chosen.get().map(|n| n.to_string()).unwrap_or_default()
            >
                <option value="" selected=move || chosen.get().is_none()>
                    {move || {
                        let size = effective(preset.get(), server_default.get(), window());
                        default_label(size)
                    }}
                </option>
                {move || {
                    sizes_for(window())
                        .into_iter()
                        .map(|size| {
                            view! {
                                <option value=size.to_string() selected=move || chosen.get() == Some(size)>
                                    {size_label(size)}
                                </option>
                            }
                        })
                        .collect_view()
                }}
            </select>
        </label>
        <span class="context-cost" data-testid="num-ctx-cost">
            {move || {
                let size = effective(chosen.get().or(preset.get()), server_default.get(), window());
                cost_text(cost().as_ref(), size, lang.get())
            }}
        </span>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_stop_at_the_window_and_include_it() {
        assert_eq!(sizes_for(8192), vec![1024, 2048, 4096, 8192]);
        assert_eq!(sizes_for(3000), vec![1024, 2048, 3000]);
        assert!(sizes_for(0).is_empty());
    }

    #[test]
    fn the_effective_size_follows_chat_then_server_then_window() {
        assert_eq!(effective(None, 4096, 8192), 4096);
        assert_eq!(effective(Some(8192), 4096, 8192), 8192);
        assert_eq!(effective(None, 0, 8192), 8192);
        assert_eq!(effective(Some(16384), 4096, 8192), 8192);
    }

    #[test]
    fn costs_read_like_people_talk() {
        let en = Lang::En;
        assert_eq!(en.seconds(0.4), "< 1 s");
        assert_eq!(en.seconds(38.2), "38 s");
        assert_eq!(en.seconds(447.0), "7 min");
        let c = PromptCost {
            per_token: 0.00739,
            per_token_squared: 5.92e-6,
            samples: 2,
            longest: 1992,
        };
        assert_eq!(
            cost_text(Some(&c), 4096, en),
            "Context: a full 4096-token window takes ≈ 2 min to read on this machine"
        );
        assert_eq!(
            cost_text(Some(&c), 4096, Lang::Ja),
            "コンテキスト: 4096 トークンの枠を読み切るのに、この機械では約 2 分かかります"
        );
        assert!(cost_text(None, 4096, en).contains("measured from the first answer on"));
        // Short prompts only, no square term yet: far sizes are lower bounds.
        let short = PromptCost {
            per_token: 0.0093,
            per_token_squared: 0.0,
            samples: 1,
            longest: 36,
        };
        assert_eq!(cost_short(&short, 64, en), "< 1 s");
        assert_eq!(cost_short(&short, 4096, en), "≥ 38 s");
        assert_eq!(
            cost_text(Some(&short), 4096, en),
            "Context: a full 4096-token window takes at least 38 s to read on this machine \
             (measured so far on prompts up to 36 tokens)"
        );
    }
}
