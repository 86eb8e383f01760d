//! The engine's image types: what an image provider is asked and what it answers, and how a request is fitted to
//! what one model's upstream takes (with a warning for every value changed, never a silent change).

use crate::catalogue::ModelSpec;
pub use crate::warning::Warning;
use bytes::Bytes;
use serde_json::{json, Value};

#[derive(Clone, Debug, PartialEq)]
pub struct ImageRequest {
    pub prompt: String,
    pub width: u32,
    pub height: u32,
    pub steps: Option<u32>,
    pub guidance: Option<f64>,
    pub seed: Option<u64>,
    /// `png` or `jpeg`.
    pub output_format: String,
    /// An image to start from (BFL's `image_prompt`), as bytes.
    pub image_prompt: Option<Bytes>,
    /// The upstream model sent the request, when not the model's own (set by [`fit`]).
    pub upstream: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ImageResult {
    pub bytes: Bytes,
    pub content_type: String,
    pub seed: Option<u64>,
}

fn warn(warnings: &mut Vec<Warning>, param: &str, asked: Value, used: Value, message: String) {
    warnings.push(Warning::new(param, asked, used, message));
}

/// `value` moved into `min..=max` and onto the nearest multiple of `multiple` (the catalogue keeps `min` and `max`
/// on that grid).
fn nearest_size(value: u32, min: u32, max: u32, multiple: u32) -> u32 {
    let multiple = multiple.max(1);
    let clamped = value.clamp(min, max);
    let down = clamped / multiple * multiple;
    let nearest = if clamped - down < multiple - (clamped - down) { down } else { down + multiple };
    nearest.clamp(min, max)
}

/// The request as `model`'s upstream takes it: sizes on its grid, steps and guidance within its ranges (or sent to
/// the upstream model that takes them, or dropped where none does), with one warning per change.
pub fn fit(model: &ModelSpec, request: &ImageRequest) -> (ImageRequest, Vec<Warning>) {
    let mut out = request.clone();
    let mut warnings = Vec::new();
    let Some(limits) = &model.image else { return (out, warnings) };
    for (param, value) in [("width", &mut out.width), ("height", &mut out.height)] {
        let used = nearest_size(*value, limits.min_size, limits.max_size, limits.size_multiple);
        if used != *value {
            let message = format!(
                "{} takes sizes that are multiples of {} from {} to {}; {param} {} became {used}",
                model.name, limits.size_multiple, limits.min_size, limits.max_size, *value
            );
            warn(&mut warnings, param, json!(*value), json!(used), message);
            *value = used;
        }
    }
    let tuned = request.steps.is_some() || request.guidance.is_some();
    if tuned {
        if let Some(upstream) = &limits.steps_upstream {
            let message = format!(
                "{} ({}) takes no num_inference_steps or guidance_scale; the request went to {upstream}, which does",
                model.name, model.upstream
            );
            warn(&mut warnings, "upstream_model", json!(model.upstream), json!(upstream), message);
            out.upstream = Some(upstream.clone());
        }
    }
    out.steps = match (request.steps, limits.max_steps) {
        (None, _) => None,
        (Some(steps), Some(max)) if steps > max => {
            let message = format!("{} takes at most {max} num_inference_steps", model.name);
            warn(&mut warnings, "num_inference_steps", json!(steps), json!(max), message);
            Some(max)
        }
        (Some(steps), Some(_)) => Some(steps),
        (Some(steps), None) => {
            let message = format!("{} takes no num_inference_steps; it was not sent", model.name);
            warn(&mut warnings, "num_inference_steps", json!(steps), Value::Null, message);
            None
        }
    };
    out.guidance = match (request.guidance, limits.min_guidance, limits.max_guidance) {
        (None, _, _) => None,
        (Some(g), Some(min), Some(max)) => {
            let used = g.clamp(min, max);
            if used != g {
                let message = format!("{} takes guidance_scale from {min} to {max}", model.name);
                warn(&mut warnings, "guidance_scale", json!(g), json!(used), message);
            }
            Some(used)
        }
        (Some(g), _, _) => {
            let message = format!("{} takes no guidance_scale; it was not sent", model.name);
            warn(&mut warnings, "guidance_scale", json!(g), Value::Null, message);
            None
        }
    };
    (out, warnings)
}

#[cfg(test)]
mod tests {
    use super::nearest_size;

    #[test]
    fn sizes_land_on_the_grid_within_the_range() {
        assert_eq!(nearest_size(1024, 256, 1440, 32), 1024);
        assert_eq!(nearest_size(1000, 256, 1440, 32), 992);
        assert_eq!(nearest_size(1010, 256, 1440, 32), 1024);
        assert_eq!(nearest_size(2048, 256, 1440, 32), 1440);
        assert_eq!(nearest_size(1, 256, 1440, 32), 256);
        assert_eq!(nearest_size(1440, 256, 1440, 32), 1440);
    }
}
